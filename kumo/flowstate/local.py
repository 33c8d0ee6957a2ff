"""Flow state kept in this process (the embedded default): conntrack keys, NAT bindings, SNAT ports.

Keys: conntrack (proto, src, sport, dst, dport, device id); NAT bindings are keyed by the tuple the REPLY
will carry, so that rev_snat/rev_dnat find them from the return packet alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from kumo.packet.flowhash import flow_hash
from kumo.simulation.view import NatTarget

DEFAULT_TTL = 60.0


@dataclass
class LocalFlowState:
    ttl: float = DEFAULT_TTL
    conntrack: dict[tuple[Any, ...], float] = field(default_factory=dict)  # key -> expiry
    nat: dict[tuple[Any, ...], tuple[tuple[Any, ...], float]] = field(default_factory=dict)
    snat_used: set[tuple[Any, ...]] = field(default_factory=set)  # (router, proto, ip, port, dst, dport)
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
        """A free (ip, port) from the targets towards `flow` = (proto, dst ip, dst port); spread by a hash
        of the flow so that concurrent flows rarely probe the same candidates."""
        proto, dst, dport, _src, sport = flow
        start = flow_hash(flow)
        for target in targets:
            first, last, port_from, port_to = target.first, target.last, target.port_from, target.port_to
            if not port_from:  # 0/0: address-only NAT keeps the source port
                port_from = port_to = sport
            span_ips, span_ports = last - first + 1, port_to - port_from + 1
            total = span_ips * span_ports
            for n in range(min(total, 65536)):
                slot = (start + n) % total
                ip, port = first + slot // span_ports, port_from + slot % span_ports
                key = (router_id, proto, ip, port, dst, dport)
                if key not in self.snat_used:
                    if self.reserve:
                        self.snat_used.add(key)
                    return ip, port
        return None

    def record(self, kind: str, key: tuple[Any, ...], value: Any = None) -> None:
        expiry = time.monotonic() + self.ttl
        if kind == "conntrack":
            self.conntrack[key] = expiry
        elif kind == "nat":
            self.nat[key] = (value, expiry)
