"""Dynamic SNAT across hosts: each host leases blocks of a (router, address)'s port range from the store and
hands out ports only inside the blocks it holds, so that two hosts never give the same (address, port)
to flows towards the same destination.

A lease is a state entry `snat_blocks/<router>/<address>/<first port>` claimed by the agent's session (created
only if free): it vanishes if the agent dies, and the agent releases a block it has not used for a while.
Address-only NAT (ports 0/0) keeps the source port and leases nothing.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Any

from kumo.flowstate.local import LocalFlowState
from kumo.packet import int_to_ip
from kumo.packet.flowhash import flow_hash
from kumo.simulation.view import NatTarget
from kumo.topology.store.base import Session, Store

log = logging.getLogger("kumo.flowstate")

SNAT_BLOCKS = "snat_blocks"
BLOCK_PORTS = 256
MAX_CLAIMS = 64  # candidate blocks tried (each a store round trip) before giving up on a target


class SnatBlocks:
    def __init__(
        self,
        store: Store,
        session: Callable[[], Session | None],
        host_id: str,
        local: LocalFlowState,
        block_ports: int = BLOCK_PORTS,
    ) -> None:
        self.store = store
        self.session = session
        self.host_id = host_id
        self.local = local
        self.block_ports = block_ports
        self.held: dict[tuple[str, int], list[tuple[int, int]]] = {}  # (router, ip) -> [(first, last port)]
        self.used_at: dict[tuple[str, int, int], float] = {}  # (router, ip, first port) -> last allocation
        self.counters: collections.Counter[str] = collections.Counter()

    def allocate(self, router_id: str, targets: list[NatTarget], flow: tuple[Any, ...]) -> tuple[int, int] | None:
        proto, dst, dport, _src, sport = flow
        start = flow_hash(flow)
        for target in targets:
            if not target.port_from:  # address-only NAT keeps the source port: nothing to lease
                chosen = self.local.take_free(router_id, proto, dst, dport, target.first, target.last, sport, sport, 0)
                if chosen is not None:
                    return chosen
                continue
            for ip in range(target.first, target.last + 1):
                for first, last in self.held.get((router_id, ip), []):
                    chosen = self.local.take_free(router_id, proto, dst, dport, ip, ip, first, last, start)
                    if chosen is not None:
                        self.used_at[(router_id, ip, first)] = time.monotonic()
                        return chosen
            block = self._lease(router_id, target, start)
            if block is not None:
                ip, first, last = block
                chosen = self.local.take_free(router_id, proto, dst, dport, ip, ip, first, last, start)
                if chosen is not None:
                    return chosen
        self.counters["snat_exhausted"] += 1
        return None

    def _lease(self, router_id: str, target: NatTarget, start: int) -> tuple[int, int, int] | None:
        """Claim a free block of the target's range (candidates in an order spread by the flow's hash)."""
        session = self.session()
        if session is None:
            return None
        span = target.port_to - target.port_from + 1
        per_ip = (span + self.block_ports - 1) // self.block_ports
        total = (target.last - target.first + 1) * per_ip
        for n in range(min(total, MAX_CLAIMS)):
            slot = (start + n) % total
            ip = target.first + slot // per_ip
            first = target.port_from + (slot % per_ip) * self.block_ports
            last = min(first + self.block_ports - 1, target.port_to)
            if (first, last) in self.held.get((router_id, ip), []):
                continue
            key = f"{router_id}/{int_to_ip(ip)}/{first}"
            try:
                claimed = self.store.state_claim(SNAT_BLOCKS, key, {"host_id": self.host_id, "last": last}, session)
            except Exception as exc:  # the store is away: no new block (counted), existing blocks still serve
                self.counters["snat_block_store_errors"] += 1
                log.warning("leasing SNAT block %s: %s", key, exc)
                return None
            if claimed:
                self.held.setdefault((router_id, ip), []).append((first, last))
                self.used_at[(router_id, ip, first)] = time.monotonic()
                self.counters["snat_blocks_leased"] += 1
                return ip, first, last
            self.counters["snat_block_taken"] += 1
        return None

    def idle_blocks(self, idle: float) -> list[tuple[str, int, int, int]]:
        """Blocks held but unused for `idle` seconds, with no live reservation: (router, ip, first, last)."""
        now = time.monotonic()
        out = []
        for (router_id, ip), blocks in self.held.items():
            for first, last in blocks:
                if now - self.used_at.get((router_id, ip, first), 0.0) < idle:
                    continue
                if not self.local.used_in(router_id, (ip,), first, last):
                    out.append((router_id, ip, first, last))
        return out

    def release(self, router_id: str, ip: int, first: int, last: int) -> None:
        blocks = self.held.get((router_id, ip), [])
        if (first, last) in blocks:
            blocks.remove((first, last))
            self.used_at.pop((router_id, ip, first), None)
            self.store.state_delete(SNAT_BLOCKS, f"{router_id}/{int_to_ip(ip)}/{first}")
            self.counters["snat_blocks_released"] += 1

    def forget(self) -> None:
        """The session that held the leases ended: they are gone from the store."""
        self.held.clear()
        self.used_at.clear()
