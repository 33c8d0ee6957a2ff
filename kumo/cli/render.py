"""Output: Rich tables for people, JSON for scripts, one red line for errors."""

from __future__ import annotations

import json
import shutil
import sys
from typing import Any

from rich.console import Console
from rich.table import Table


def console(stderr: bool = False, soft_wrap: bool = False) -> Console:
    """Output is not cut to 80 columns when it goes to a pipe or file."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else max(shutil.get_terminal_size((200, 24)).columns, 200)
    return Console(file=stream, width=width, highlight=False, soft_wrap=soft_wrap)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict) and set(value) == {"start", "end"}:
        return str(value["start"]) if value["start"] == value["end"] else f"{value['start']}-{value['end']}"
    if isinstance(value, dict) and "address_from" in value:  # a NAT target, in the CLI's short form
        addresses = value["address_from"]
        if value["address_to"] != value["address_from"]:
            addresses += f"-{value['address_to']}"
        ports = value.get("port_from") or 0
        if ports:
            addresses += f":{ports}-{value['port_to']}"
        return addresses
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value) if value else "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def print_table(rows: list[dict[str, Any]], columns: tuple[str, ...] | list[str], title: str | None = None) -> None:
    table = Table(title=title, title_justify="left", header_style="bold cyan")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(cell(row.get(c)) for c in columns))
    console().print(table)


def print_object(obj: dict[str, Any], title: str | None = None) -> None:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field", style="bold cyan")
    table.add_column("value", overflow="fold")
    for key, value in obj.items():
        table.add_row(key, cell(value))
    console().print(table)


def print_error(message: str) -> None:
    console(stderr=True).print(f"[bold red]error:[/] {message}", markup=True, highlight=False)


def flows(rows: list[dict[str, Any]], as_json: bool = False) -> None:
    """`kumo flows`: one block per kernel flow (match, actions, counters, why)."""
    if as_json:
        print_json(rows)
        return
    out = console()
    if not rows:
        out.print("no kernel flows")
        return
    for row in sorted(rows, key=lambda r: (r["in_port"], -r["packets"])):
        match = " ".join(f"{k}={v}" for k, v in row["match"].items() if k != "in_port")
        if row.get("megaflow") is not None:  # (matches every packet that agrees on these fields)
            match = f"{match} * (megaflow, mask {row['megaflow']})"
        out.print(f"[bold]in {row['in_port']}[/bold] {match}")
        out.print(f"    actions: {', '.join(row['actions'])}")
        age = "-" if row["age_s"] is None else f"{row['age_s']}s"
        idle = "never used" if row["idle_s"] is None else f"idle {row['idle_s']}s"
        out.print(f"    {row['packets']} packets, {row['bytes']} bytes, age {age}, {idle}")
        out.print(f"    why: {'; '.join(row['why'])}")
    out.print(f"{len(rows)} flows")


def agent_stats(stats: dict[str, Any], as_json: bool = False) -> None:
    if as_json:
        print_json(stats)
        return
    summary = {k: v for k, v in stats.items() if not isinstance(v, dict)}
    if "invalidation_ms" in stats:
        summary["invalidation"] = "last {last} ms, max {max} ms".format(**stats["invalidation_ms"])
    latency = stats.get("upcall_to_reinject_us", {})
    if latency.get("samples"):
        summary["upcall to re-injection"] = "p50 {p50} µs, p99 {p99} µs, max {max} µs ({samples} packets)".format(
            **latency
        )
    collections = stats.get("garbage_collections")
    if collections:
        summary["garbage collections"] = "{young} young, {middle} middle, {full} full (between rounds)".format(
            **collections
        )
        longest = stats.get("garbage_collection_longest_ms")
        if longest:
            summary["longest collection pause"] = "{young} ms young, {middle} ms middle, {full} ms full".format(
                **longest
            )
    storms = stats.get("storm_control")
    if storms:
        summary["storm control"] = (
            f"ports over {storms['upcall_rate']} upcalls/s are held to {storms['storm_upcall_rate']}/s"
            if storms["storm_upcall_rate"]
            else "off"
        )
        for port, held in storms.get("held", {}).items():
            summary[f"storming: {port}"] = f"offers {held['offered_per_s']}/s, held for {held['held_s']} s"
    print_object(summary, title="agent")
    for section in ("agent", "datapath"):
        rows = [{"counter": k, "value": v} for k, v in stats.get(section, {}).items()]
        print_table(rows, ("counter", "value"), title=f"{section} counters")
