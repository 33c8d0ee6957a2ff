"""Flow state kept in this process (the embedded default): conntrack keys, NAT bindings, SNAT ports.

Keys: conntrack (proto, src, sport, dst, dport, device id); NAT bindings are keyed by the tuple the REPLY
will carry, so that rev_snat/rev_dnat find them from the return packet alone.

Every entry expires `ttl` seconds after it was last recorded (the agent records the state of flows in use
again, so it lives as long as they do). An SNAT port is held as long as the forward binding that uses it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kumo.packet.flowhash import flow_hash
from kumo.simulation.view import NatTarget

DEFAULT_TTL = 60.0


def snat_port_key(fwd_key: tuple[Any, ...], chosen: tuple[Any, ...]) -> tuple[Any, ...]:
    """The SNAT port a forward binding ("snat-fwd", router, proto, src, sport, dst, dport) -> (ip, port) holds:
    (router, proto, ip, port, dst, dport)."""
    _, router, proto, _src, _sport, dst, dport = fwd_key
    return (router, proto, chosen[0], chosen[1], dst, dport)


@dataclass
class LocalFlowState:
    ttl: float = DEFAULT_TTL
    conntrack: dict[tuple[Any, ...], float] = field(default_factory=dict)  # key -> expiry
    nat: dict[tuple[Any, ...], tuple[tuple[Any, ...], float]] = field(default_factory=dict)
    snat_used: dict[tuple[Any, ...], float] = field(default_factory=dict)  # (router, proto, ip, port, dst, dport)
    reserve: bool = True  # False for traces: look, but write and reserve nothing

    def conntrack_has(self, key: tuple[Any, ...]) -> bool:
        expiry = self.conntrack.get(key)
        return expiry is not None and expiry > time.monotonic()

    def nat_get(self, key: tuple[Any, ...]) -> tuple[Any, ...] | None:
        entry = self.nat.get(key)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def snat_allocate(self, router_id: str, targets: list[NatTarget], flow: tuple[Any, ...]) -> tuple[int, int] | None:
        """A free (ip, port) from the targets towards `flow` = (proto, dst ip, dst port, src, sport); spread by
        a hash of the flow so that concurrent flows rarely probe the same candidates."""
        proto, dst, dport, _src, sport = flow
        start = flow_hash(flow)
        for target in targets:
            port_from, port_to = target.port_from, target.port_to
            if not port_from:  # 0/0: address-only NAT keeps the source port
                port_from = port_to = sport
            chosen = self.take_free(router_id, proto, dst, dport, target.first, target.last, port_from, port_to, start)
            if chosen is not None:
                return chosen
        return None

    def take_free(
        self,
        router_id: str,
        proto: int,
        dst: int,
        dport: int,
        first: int,
        last: int,
        port_from: int,
        port_to: int,
        start: int,
    ) -> tuple[int, int] | None:
        """The first free (ip, port) of a range towards (dst, dport), probing from `start`; reserved."""
        now = time.monotonic()
        span_ports = port_to - port_from + 1
        total = (last - first + 1) * span_ports
        for n in range(min(total, 65536)):
            slot = (start + n) % total
            ip, port = first + slot // span_ports, port_from + slot % span_ports
            key = (router_id, proto, ip, port, dst, dport)
            if self.snat_used.get(key, 0.0) <= now:
                if self.reserve:
                    self.snat_used[key] = now + self.ttl
                return ip, port
        return None

    def record(self, kind: str, key: tuple[Any, ...], value: Any = None) -> None:
        expiry = time.monotonic() + self.ttl
        if kind == "conntrack":
            self.conntrack[key] = expiry
        elif kind == "nat":
            self.nat[key] = (value, expiry)
            if key[0] == "snat-fwd":
                self.snat_used[snat_port_key(key, value)] = expiry  # the port lives as long as its binding

    # the agent's interface, shared with RedisFlowState: here everything is local already
    def learn(self, kind: str, key: tuple[Any, ...], value: Any = None) -> None:
        """State pushed by a peer."""
        self.record(kind, key, value)

    def flush(self) -> None:
        """Nothing to write anywhere else."""

    def discard_pending(self) -> None:
        """Nothing pending."""

    def purge(self) -> int:
        """Forget expired entries; how many went."""
        now = time.monotonic()
        gone = 0
        for table in (self.conntrack, self.snat_used):
            dead = [k for k, expiry in table.items() if expiry <= now]
            for k in dead:
                del table[k]
            gone += len(dead)
        dead_nat = [k for k, (_, expiry) in self.nat.items() if expiry <= now]
        for k in dead_nat:
            del self.nat[k]
        return gone + len(dead_nat)

    def used_in(self, router_id: str, ips: Iterable[int], port_from: int, port_to: int) -> bool:
        """Whether any live SNAT reservation falls in these addresses and ports (a block in use)."""
        now = time.monotonic()
        wanted = set(ips)
        return any(
            k[0] == router_id and k[2] in wanted and port_from <= k[3] <= port_to and expiry > now
            for k, expiry in self.snat_used.items()
        )
