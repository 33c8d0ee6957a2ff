"""`kumo trace`: a simulated packet's journey, one readable line per step, with names instead of ids."""

from __future__ import annotations

import re
from typing import Any

import click
from rich.console import Console

from kumo.cli import render
from kumo.cli.resources import common_options, make_ctx, resolve
from kumo.client import Client


def names_of(client: Client) -> dict[str, str]:
    """id -> "kind name" for everything a trace step can mention."""
    names: dict[str, str] = {}
    for kind, label in (("bridges", "bridge"), ("routers", "router"), ("ports", "port"), ("chains", "chain")):
        for obj in client.collection(kind).list():
            names[obj["id"]] = f"{label} {obj.get('name') or obj['id'][:8]}"
    return names


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _named(text: str, names: dict[str, str]) -> str:
    return _UUID.sub(lambda m: names.get(m.group(0), m.group(0)[:8]), text)


def render_trace(trace: dict[str, Any], names: dict[str, str]) -> list[str]:
    lines = []
    for n, step in enumerate(trace["steps"], 1):
        where = names.get(step["device_id"], f"{step['device_type']} {step['device_id'][:8]}")
        line = f"{n:>2}. {where:<28} {step['stage']:<22} {_named(step['what'], names)}"
        if step.get("chain_id"):
            line += f"  [{names.get(step['chain_id'], 'chain ' + step['chain_id'][:8])}"
            line += f", rule {step['rule_id'][:8]}]" if step.get("rule_id") else "]"
        lines.append(line)
    result = trace["result"]
    egress = ", ".join(names.get(p, p) for p in result["egress_port_ids"])
    packet = result["packet"]
    ports = (
        f":{packet.get('src_port')} -> {packet['ip_dst']}:{packet.get('dst_port')}"
        if "src_port" in packet
        else (f" -> {packet['ip_dst']}")
    )
    lines.append(f"=> {result['action']} ({result['reason']})" + (f" to {egress}" if egress else ""))
    lines.append(
        f"   packet leaves as {packet['proto']} {packet['ip_src']}{ports} ttl {packet['ttl']}, "
        f"{packet['eth_src']} -> {packet['eth_dst']}"
    )
    for generated in result.get("generated", []):
        lines.append(
            f"   generated: {generated['what']} out of {names.get(generated['port_id'], generated['port_id'])}"
        )
    return lines


def wide_console() -> Console:
    """Trace lines are never wrapped."""
    return render.console(soft_wrap=True)


@click.command("trace", help="Simulate a packet entering a port and show its journey (nothing is sent).")
@click.option("--port", "port", required=True, help="ingress port (id or name)")
@click.option("--src", "src", required=True, help="source IPv4 address")
@click.option("--dst", "dst", required=True, help="destination IPv4 address")
@click.option(
    "--proto", "proto", default=None, help="tcp, udp, icmp or a number (default: tcp with --dst-port, else icmp echo)"
)
@click.option("--src-port", type=int, default=None)
@click.option("--dst-port", type=int, default=None)
@click.option("--eth-src", default=None, help="source MAC (default: a trace MAC)")
@click.option("--eth-dst", default=None, help="destination MAC (default: what a VM would use)")
@click.option("--vlan", "vlan_id", type=int, default=None)
@click.option("--ttl", type=int, default=64, show_default=True)
@click.option("--icmp-type", type=int, default=None)
@click.option("--icmp-code", type=int, default=None)
@click.option("--fragment", type=click.Choice(["none", "first", "later"]), default="none", show_default=True)
@common_options
def trace_cmd(port: str, src: str, dst: str, api: str | None, as_json: bool | None, **fields: Any) -> None:
    ctx = make_ctx(api, as_json)
    packet: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    proto = packet.pop("proto", None)
    if proto is not None:
        packet["proto"] = int(proto) if proto.isdigit() else proto
    packet.update(ip_src=src, ip_dst=dst)
    result = ctx.client.trace(resolve(ctx.client, ("ports",), port), packet)
    if ctx.as_json:
        render.print_json(result)
        return
    console = wide_console()
    for line in render_trace(result, names_of(ctx.client)):
        console.print(line, markup=False)
