"""Flow state kept in this process (the embedded default): conntrack keys, NAT bindings, SNAT ports.

Keys: conntrack (proto, src, sport, dst, dport, device id); NAT bindings are keyed by the tuple the REPLY
will carry, so that rev_snat/rev_dnat find them from the return packet alone.

Every entry expires `ttl` seconds after it was last recorded (the agent records the state of flows in use
again, so it lives as long as they do). An SNAT port is held as long as the forward binding that uses it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from kumo.packet.flowhash import flow_hash
from kumo.simulation.view import NatTarget

DEFAULT_TTL = 60.0
_FINAL: frozenset[tuple[str, tuple[Any, ...]]] = frozenset()


def snat_port_key(fwd_key: tuple[Any, ...], chosen: tuple[Any, ...]) -> tuple[Any, ...]:
    """The SNAT port a forward binding ("snat-fwd", router, proto, src, sport, dst, dport) -> (ip, port) holds:
    (router, proto, ip, port, dst, dport)."""
    _, router, proto, _src, _sport, dst, dport = fwd_key
    return (router, proto, chosen[0], chosen[1], dst, dport)


class ConntrackMirror(Protocol):
    """The kernel's connection tracking (kumo.datapath.conntrack.KernelConntrack)."""

    def has(self, key: tuple[Any, ...]) -> bool: ...

    def record(self, key: tuple[Any, ...]) -> None: ...


@dataclass
class LocalFlowState:
    ttl: float = DEFAULT_TTL
    conntrack: dict[tuple[Any, ...], float] = field(default_factory=dict)  # key -> expiry
    nat: dict[tuple[Any, ...], tuple[tuple[Any, ...], float]] = field(default_factory=dict)
    snat_used: dict[tuple[Any, ...], float] = field(default_factory=dict)  # (router, proto, ip, port, dst, dport)
    reserve: bool = True  # False for traces: look, but write and reserve nothing
    # The kernel's connections (an agent's): what the kernel recorded counts, and what is recorded here goes
    # there too, so that the kernel's answers and the simulation's agree (docs/megaflows.md).
    kernel: ConntrackMirror | None = field(default=None, repr=False)

    def conntrack_has(self, key: tuple[Any, ...]) -> bool:
        expiry = self.conntrack.get(key)
        here = expiry is not None and expiry > time.monotonic()
        if self.kernel is None:
            return here
        if self.kernel.has(key):
            return True
        if here:
            self.kernel.record(key)  # (known here first: pushed by a peer, read from Redis)
        return here

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
            if self.kernel is not None:
                self.kernel.record(key)
        elif kind == "nat":
            self.nat[key] = (value, expiry)
            if key[0] == "snat-fwd":
                self.snat_used[snat_port_key(key, value)] = expiry  # the port lives as long as its binding

    def forget(self, kind: str, key: tuple[Any, ...], value: Any = None) -> None:
        """Undo record() (of a result that did not stand: kumo.agent.provisional), the SNAT port included. Not
        mirrored to the kernel: the agent gives it a mirror only when nothing is provisional (local state)."""
        if kind == "conntrack":
            self.conntrack.pop(key, None)
        elif kind == "nat" and self.nat.pop(key, None) is not None and key[0] == "snat-fwd":
            self.snat_used.pop(snat_port_key(key, value), None)

    # the agent's interface, shared with RedisFlowState: here everything is local already
    def learn(self, kind: str, key: tuple[Any, ...], value: Any = None) -> None:
        """State pushed by a peer."""
        self.record(kind, key, value)

    def flush(self) -> None:
        """Nothing to write anywhere else."""

    def take_unconfirmed(self) -> frozenset[tuple[str, tuple[Any, ...]]]:
        """Nothing is looked up elsewhere: every answer is final."""
        return _FINAL

    def discard_pending(self) -> None:
        """Nothing pending."""

    def expired_keys(self) -> list[tuple[str, tuple[Any, ...]]]:
        """(table, key) of the entries that have expired. Each table is copied in one C-level step, so the
        agent calls this without its lock and filters while upcalls go on; drop_expired then takes them."""
        now = time.monotonic()
        out = [("conntrack", k) for k, expiry in list(self.conntrack.items()) if expiry <= now]
        out += [("snat_used", k) for k, expiry in list(self.snat_used.items()) if expiry <= now]
        out += [("nat", k) for k, (_, expiry) in list(self.nat.items()) if expiry <= now]
        return out

    def drop_expired(self, keys: list[tuple[str, tuple[Any, ...]]]) -> int:
        """Forget those of `keys` that are still expired (one may have been recorded again meanwhile)."""
        now = time.monotonic()
        gone = 0
        for table, key in keys:
            if table == "nat":
                entry = self.nat.get(key)
                if entry is not None and entry[1] <= now:
                    del self.nat[key]
                    gone += 1
                continue
            expiries = self.conntrack if table == "conntrack" else self.snat_used
            if expiries.get(key, now + 1) <= now:
                del expiries[key]
                gone += 1
        return gone
