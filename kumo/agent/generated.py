"""Packets the agent sends itself, and packets that wait.

Generated packets are the simulation's own (ARP and DHCP replies, a router's ARP requests and ICMP errors):
they go out of a local VM's interface, through the tunnel to a port's host, or into the peer device of an
interior port (walked through it first, so that its filters apply). Parked packets wait for an event, a
router's ARP resolution of their next hop, and are served again when it comes (or dropped after
PARK_TIMEOUT)."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

from kumo.agent.egress import Egress
from kumo.agent.view import HostView
from kumo.datapath.datapath import Datapath
from kumo.packet import PacketError
from kumo.packet.frame import parse_frame
from kumo.simulation import simulate
from kumo.simulation.result import Generated, Verdict
from kumo.simulation.view import FlowState, LearnedTables

PARK_TIMEOUT = 3.0  # seconds a packet waits for ARP resolution
PARK_MAX = 64  # packets parked per next hop (the rest are dropped and counted)

Parked = tuple[float, bytes, int, str]  # (until, frame, ifindex, port id)


@dataclass(eq=False)
class Emitter:
    view: HostView
    datapath: Datapath
    egress: Egress
    learned: LearnedTables
    flow_state: FlowState
    counters: collections.Counter[str]

    def emit(self, generated: Generated) -> None:
        """Send a packet the simulation made: out of a local VM's interface, or into the peer device of an
        interior port (a router's ICMP error or ARP request crossing a bridge to the VMs)."""
        snapshot = self.view.snapshot
        port = snapshot.ports.get(generated.port_id)
        if port is None:
            return
        if port.peer is None:
            self.send_local(generated.port_id, generated.frame)
            return
        try:
            match = parse_frame(generated.frame, port.peer["id"])
        except PacketError:
            return
        walk = simulate(match, snapshot, self.learned, self.flow_state, frame=generated.frame, trace=False)
        if walk.verdict not in (Verdict.OUTPUT, Verdict.FLOOD):
            self.counters[f"generated_dropped.{walk.reason.value}"] += 1  # e.g. a port's filter drops it
            return
        if walk.rewrites or walk.ttl_decrement:
            self.counters["generated_needs_rewrite"] += 1  # not executed in Python (see docs/architecture.md)
            return
        for port_id in walk.egress_port_ids:
            self.send_local(port_id, generated.frame)

    def send_local(self, port_id: str, frame: bytes) -> None:
        """A generated frame out of a port: its local interface, or through the tunnel to its host."""
        interface = self.view.bindings.get(port_id)
        try:
            if interface is not None and port_id in self.view.ifindex_of_port:
                self.datapath.send(interface, frame)
            else:
                tunnel = self.egress.tunnel_to(port_id)
                if tunnel is None:
                    self.counters["generated_not_sent"] += 1
                    return
                self.datapath.send_tunnel(tunnel.tunnel_key, tunnel.remote, frame)
            self.counters["generated_sent"] += 1
        except OSError:
            self.counters["generated_send_error"] += 1


class Parking:
    def __init__(self, counters: collections.Counter[str]) -> None:
        self.counters = counters
        self.parked: dict[tuple[str, ...], list[Parked]] = {}

    def __len__(self) -> int:
        return sum(len(waiting) for waiting in self.parked.values())

    def park(self, event: tuple[str, ...], frame: bytes, ifindex: int, port_id: str) -> None:
        waiting = self.parked.setdefault(event, [])
        if len(waiting) >= PARK_MAX:
            self.counters["drop.park_full"] += 1
            return
        waiting.append((time.monotonic() + PARK_TIMEOUT, frame, ifindex, port_id))
        self.counters["parked"] += 1

    def take(self, event: tuple[str, ...]) -> list[Parked]:
        """The packets waiting for `event` (it came): the caller serves them again."""
        return self.parked.pop(event, [])

    def expire(self, now: float) -> None:
        for event, waiting in list(self.parked.items()):
            kept = [w for w in waiting if w[0] > now]
            self.counters["drop.arp_timeout"] += len(waiting) - len(kept)
            if kept:
                self.parked[event] = kept
            else:
                del self.parked[event]
