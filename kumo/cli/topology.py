"""`kumo topology --svg FILE`: the picture of the virtual topology the API draws (/ui/topology.svg), for
reports. Drawn on the API's host (Graphviz there, not here); what the token may read, nothing more."""

from __future__ import annotations

from pathlib import Path

import click

from kumo.cli.resources import make_ctx
from kumo.client import ApiError


@click.command("topology")
@click.option(
    "--svg",
    "svg_file",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the topology as an SVG picture to this file (`-` for standard output).",
)
@click.option("--api", "api", default=None, metavar="URL", help="API server (env KUMO_API).")
def topology_cmd(svg_file: Path, api: str | None) -> None:
    """The virtual topology as a picture: devices, ports, links, bindings, hosts, BGP peers, pools."""
    ctx = make_ctx(api, False)
    response = ctx.client.send("GET", "/ui/topology.svg")
    if response.status_code != 200:
        ctx.client.answer(response)  # (raises the API's error)
        raise ApiError(response.status_code, "http_error", response.text[:200])
    if str(svg_file) == "-":
        click.echo(response.text, nl=False)
        return
    svg_file.write_bytes(response.content)
    click.echo(f"wrote {svg_file} ({len(response.content):,} bytes)")
