"""What `kumo flows` shows: every kernel flow with its match, actions, counters, age, and why it exists (the
devices, ports, chains and rules its simulation went through, from the result's tags). Also the percentiles
`kumo agent stats` gives of the agent's share of a first packet's latency."""

from __future__ import annotations

import collections
import time
from typing import Any

from kumo.agent.flows import FlowBook
from kumo.agent.masks import MaskTable
from kumo.agent.view import HostView
from kumo.datapath.actions import describe_actions, describe_key
from kumo.datapath.datapath import Datapath
from kumo.datapath.flowmaps import is_megaflow, mask_id_of, masked_fields
from kumo.datapath.layout import LINK_PORT, FlowKey
from kumo.simulation.result import SimulationResult
from kumo.simulation.view import Snapshot


def flow_rows(datapath: Datapath, view: HostView, book: FlowBook, masks: MaskTable) -> list[dict[str, Any]]:
    """Every kernel flow: the exact ones, then the megaflows (whose match shows only the fields of their mask,
    and `megaflow`: the mask's id)."""
    names = view.interface_names()
    now_ns = time.monotonic_ns()
    rows = []
    flows = list(datapath.flows())
    links = {(key.ip_src, key.ip_dst): value.act for key, value in flows if key.in_port == LINK_PORT}
    megaflows = [(FlowKey.from_buffer_copy(raw), raw, value) for raw, value in datapath.maps.megaflows()]
    for key, raw, value in [(key, bytes(key), value) for key, value in flows] + megaflows:
        if key.in_port == LINK_PORT:
            continue  # (shown within the floods that follow them)
        flow = book.get(raw)
        row = {
            "in_port": names.get(key.in_port, str(key.in_port)),
            "match": describe_key(key),
            "actions": describe_actions(value.act, names, links),
            "packets": value.packets,
            "bytes": value.bytes,
            "age_s": round(time.monotonic() - flow.created, 1) if flow else None,
            "idle_s": round((now_ns - value.last_used_ns) / 1e9, 1) if value.last_used_ns else None,
            "why": why(view.snapshot, flow.result) if flow else ["(not known to this agent)"],
        }
        if is_megaflow(raw):
            mask_id = mask_id_of(raw)
            covered = masked_fields(masks.mask_of(mask_id) or 0)
            row["match"] = {k: v for k, v in row["match"].items() if k in covered}
            row["megaflow"] = mask_id
        rows.append(row)
    return rows


def why(snap: Snapshot, result: SimulationResult) -> list[str]:
    """A result's reasons as sentences: what it went through, then its verdict."""
    out = []
    for tag in sorted(t for t in result.tags if isinstance(t, str)):
        kind, _, ident = tag.partition(":")
        if kind == "device" and ident in snap.devices:
            dtype, device = snap.devices[ident]
            out.append(f"{dtype} {device.get('name') or ident}")
        elif kind == "port" and ident in snap.ports:
            out.append(f"port {snap.ports[ident].get('name') or ident}")
        elif kind == "chain":
            out.append(f"chain {snap.chains.get(ident, {}).get('name') or ident}")
        elif kind == "rule" and ident in snap.rules:
            rule = snap.rules[ident]
            chain = snap.chains.get(rule.get("chain_id", ""), {})
            order = chain.get("rule_ids", [])
            position = order.index(ident) + 1 if ident in order else "?"
            out.append(f"rule {rule.get('type')} #{position} of {chain.get('name') or rule.get('chain_id')}")
    return [*out, f"verdict {result.verdict.value} ({result.reason.value})"]


def percentiles(samples: collections.deque[float]) -> dict[str, float | int]:
    """p50/p99/max of the last samples: the agent's share of a first packet's latency (from the kernel
    queueing the upcall to the re-injected packet handed back to the kernel)."""
    ordered = sorted(samples)
    if not ordered:
        return {"samples": 0}
    at = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)  # noqa: E731
    return {"samples": len(ordered), "p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1], 1)}
