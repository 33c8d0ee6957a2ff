"""The `kumo` command line: processes (`up`, `api`, `agent`, `demo`) and the operator CLI.

Built on click directly (the library Typer is built on): the resource commands are generated from the
resource registry, which click's Command/Option objects express and Typer's function signatures do not.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kumo.cli import render
from kumo.cli.resources import resource_groups
from kumo.cli.trace import trace_cmd
from kumo.client import ApiError
from kumo.topology.errors import KumoError


@click.group(
    help="Kumo: a distributed L2-L4 network virtualization overlay. Start with `kumo up`, then "
    "`kumo bridge create --name b1`.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
)
@click.option("--api", "api", envvar="KUMO_API", metavar="URL", help="API server for the operator CLI (env KUMO_API).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.version_option(package_name="kumo")
@click.pass_context
def cli(ctx: click.Context, api: str | None, as_json: bool) -> None:
    ctx.obj = {"api": api, "json": as_json}


@cli.command()
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=Path("/var/lib/kumo"),
    show_default=True,
    help="Where kumo.db lives.",
)
@click.option("--listen", default="127.0.0.1:8181", show_default=True, help="ADDRESS:PORT of the REST API.")
def up(state_dir: Path, listen: str) -> None:
    """All-in-one for one machine: REST API on the embedded store (the agent joins in a later release)."""
    from kumo.server import serve

    state_dir.mkdir(parents=True, exist_ok=True)
    serve(
        f"sqlite://{state_dir.resolve() / 'kumo.db'}",
        listen,
        banner="kumo up: API on the embedded store; the host agent (datapath) is not part of this release yet",
    )


@cli.command()
@click.option("--store", required=True, help="sqlite:///path/kumo.db or zookeeper://host:port[,...]/chroot")
@click.option("--listen", default="127.0.0.1:8181", show_default=True, help="ADDRESS:PORT of the REST API.")
def api(store: str, listen: str) -> None:
    """The REST API server alone, on any store."""
    from kumo.server import serve

    serve(store, listen)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def agent(args: tuple[str, ...]) -> None:
    """The per-host agent (not available yet: it arrives with the datapath)."""
    raise KumoError(
        "the host agent is not implemented in this release: the kernel datapath and agent are still being "
        "built. `kumo up` and `kumo api` serve the topology API meanwhile.",
        code="not_implemented",
    )


@cli.command()
def demo() -> None:
    """Build a sample cloud through the API and show it (runs its own API on a free loopback port)."""
    from kumo.demo import run_demo

    run_demo()


for _group in resource_groups():
    cli.add_command(_group)
cli.add_command(trace_cmd)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every error is one clear line and exit status 1."""
    try:
        cli.main(args=argv, prog_name="kumo", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        render.print_error("aborted")
        return 1
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see `{exc.ctx.command_path} --help`)"
        render.print_error(f"{exc.format_message()}{hint}")
        return 1
    except (ApiError, KumoError) as exc:
        render.print_error(exc.message)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def console() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    console()
