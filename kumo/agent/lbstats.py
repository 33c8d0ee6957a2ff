"""Pool statistics on one host, from its kernel flows: per member, the connections balanced to it (active:
whose forward flow is installed here now; total: begun here since the agent started) and their bytes (in:
client to member; out: member to client), counted by the kernel.

A flow is the pool's when its simulation tagged it with the pool (kumo.simulation.l4lb: a connection to a VIP,
or a member's reply). A connection begins when its binding to a member is recorded (a `dnat-fwd` state
write). The bytes of a flow removed are added to its member's total as it goes (one read of the kernel's
counters); those of installed flows are read when the statistics are taken (`read`). The agent publishes
them every few seconds (kumo.lb.manager); the API adds up the hosts' (`GET /v1/pools/{id}/stats`)."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from kumo.agent.view import HostView
from kumo.datapath.actions import match_fields
from kumo.datapath.datapath import Datapath
from kumo.datapath.layout import FlowKey
from kumo.simulation.result import SimulationResult

FIELDS = ("active_connections", "total_connections", "bytes_in", "bytes_out")


@dataclass(frozen=True)
class PoolFlow:
    pool_id: str
    member_id: str
    forward: bool  # client -> member (else: the member's reply)


@dataclass(eq=False)
class PoolStats:
    datapath: Datapath
    view: HostView
    flows: dict[bytes, PoolFlow] = field(default_factory=dict)  # the pools' booked flows, by kernel key
    # (pool, member) -> total connections and the bytes of removed flows
    done: collections.defaultdict[tuple[str, str], collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )

    # --- the book's observer (packet thread) --------------------------------------------------------------
    def booked(self, raw: bytes, result: SimulationResult, sample: bytes) -> None:
        rewrites = result.rewrites
        if "ip_dst" not in rewrites and "ip_src" not in rewrites:
            return  # (no NAT: not a pool's, and the common case, decided without looking at the tags)
        pool_id = next((t[5:] for t in result.tags if isinstance(t, str) and t.startswith("pool:")), None)
        if pool_id is None:
            return
        fields = match_fields(FlowKey.from_buffer_copy(sample or raw))
        if "ip_dst" in rewrites:  # to a VIP, DNATed to its member
            address, port, forward = rewrites["ip_dst"], rewrites.get("tp_dst", fields.get("tp_dst", 0)), True
        elif "ip_src" in rewrites:  # a member's reply, its source back to the VIP
            address, port, forward = fields["ip_src"], fields.get("tp_src", 0), False
        else:
            return
        member_id = self.view.snapshot.pool_members.get((pool_id, int(address), int(port)))
        if member_id is None:
            return
        self.flows[raw] = PoolFlow(pool_id, member_id, forward)
        if forward and any(w.kind == "nat" and w.key[0] == "dnat-fwd" for w in result.state_writes):
            self.done[(pool_id, member_id)]["total_connections"] += 1

    def unbooked(self, raw: bytes) -> None:
        flow = self.flows.pop(raw, None)
        if flow is None:
            return
        value = self.datapath.lookup(raw)  # (before the kernel entry goes)
        if value is not None:
            self.done[(flow.pool_id, flow.member_id)]["bytes_in" if flow.forward else "bytes_out"] += value.bytes

    # --- reading (under the agent's lock: a copy; the kernel reads after, without it) ---------------------------
    def copy(self) -> tuple[dict[bytes, PoolFlow], dict[tuple[str, str], dict[str, int]]]:
        return dict(self.flows), {k: dict(v) for k, v in self.done.items()}


def read(
    datapath: Datapath, flows: dict[bytes, PoolFlow], done: dict[tuple[str, str], dict[str, int]]
) -> dict[str, dict[str, dict[str, int]]]:
    """pool id -> member id -> FIELDS: the removed flows' totals plus the installed flows' kernel counters."""
    out: dict[str, dict[str, dict[str, int]]] = {}

    def member(pool_id: str, member_id: str) -> dict[str, int]:
        return out.setdefault(pool_id, {}).setdefault(member_id, dict.fromkeys(FIELDS, 0))

    for (pool_id, member_id), counts in done.items():
        row = member(pool_id, member_id)
        for name, count in counts.items():
            row[name] += count
    for raw, flow in flows.items():
        row = member(flow.pool_id, flow.member_id)
        value = datapath.lookup(raw)
        if flow.forward:
            row["active_connections"] += 1
        if value is not None:
            row["bytes_in" if flow.forward else "bytes_out"] += value.bytes
    return out
