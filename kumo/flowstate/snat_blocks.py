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
    """Blocks are aligned on multiples of `block_ports` (block of port p: p // block_ports), so that a binding
    read back from the shared store (an agent restart, a migrated VM) names its block by its port alone."""

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
        self.held: dict[tuple[str, int], set[int]] = {}  # (router, ip) -> aligned first ports of blocks held
        self.used_at: dict[tuple[str, int, int], float] = {}  # (router, ip, block) -> last allocation
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
                for block in sorted(self.held.get((router_id, ip), ())):
                    chosen = self._take(router_id, proto, dst, dport, ip, block, target, start)
                    if chosen is not None:
                        return chosen
            leased = self._lease(router_id, target, start)
            if leased is not None:
                chosen = self._take(router_id, proto, dst, dport, *leased, target, start)
                if chosen is not None:
                    return chosen
        self.counters["snat_exhausted"] += 1
        return None

    def _take(
        self, router_id: str, proto: int, dst: int, dport: int, ip: int, block: int, target: NatTarget, start: int
    ) -> tuple[int, int] | None:
        first, last = max(block, target.port_from), min(block + self.block_ports - 1, target.port_to)
        if first > last:
            return None
        chosen = self.local.take_free(router_id, proto, dst, dport, ip, ip, first, last, start)
        if chosen is not None:
            self.used_at[(router_id, ip, block)] = time.monotonic()
        return chosen

    def _lease(self, router_id: str, target: NatTarget, start: int) -> tuple[int, int] | None:
        """Claim a free block of the target's range (candidates in an order spread by the flow's hash)."""
        lowest, highest = target.port_from // self.block_ports, target.port_to // self.block_ports
        per_ip = highest - lowest + 1
        total = (target.last - target.first + 1) * per_ip
        for n in range(min(total, MAX_CLAIMS)):
            slot = (start + n) % total
            ip = target.first + slot // per_ip
            block = (lowest + slot % per_ip) * self.block_ports
            if block in self.held.get((router_id, ip), ()):
                continue
            claimed = self._claim(router_id, ip, block)
            if claimed:
                return ip, block
            if claimed is None:  # the store is away: trying more blocks would only wait longer
                return None
        return None

    def adopt(self, router_id: str, ip: int, port: int) -> None:
        """A binding found in the shared store uses (ip, port): hold its block, so that no other host hands
        the port out while the binding lives."""
        block = port // self.block_ports * self.block_ports
        if block in self.held.get((router_id, ip), ()):
            return
        if self._claim(router_id, ip, block) is False:
            self.counters["snat_block_adopt_conflicts"] += 1  # another host holds it now (its agent restarted)

    def _claim(self, router_id: str, ip: int, block: int) -> bool | None:
        """True: the block is ours now; False: another host holds it; None: no store session to ask."""
        session = self.session()
        if session is None:
            return None
        key = f"{router_id}/{int_to_ip(ip)}/{block}"
        try:
            claimed = self.store.state_claim(SNAT_BLOCKS, key, {"host_id": self.host_id}, session)
        except Exception as exc:  # the store is away: no new block (counted); held blocks still serve
            self.counters["snat_block_store_errors"] += 1
            log.warning("leasing SNAT block %s: %s", key, exc)
            return None
        if claimed:
            self.held.setdefault((router_id, ip), set()).add(block)
            self.used_at[(router_id, ip, block)] = time.monotonic()
            self.counters["snat_blocks_leased"] += 1
        else:
            self.counters["snat_block_taken"] += 1
        return claimed

    def idle_blocks(self, idle: float) -> list[tuple[str, int, int]]:
        """Blocks held but unused for `idle` seconds, with no live reservation: (router, ip, block)."""
        now = time.monotonic()
        size = self.block_ports
        live = {(k[0], k[2], k[3] // size * size) for k, expiry in list(self.local.snat_used.items()) if expiry > now}
        return [
            (router_id, ip, block)
            for (router_id, ip), blocks in self.held.items()
            for block in blocks
            if now - self.used_at.get((router_id, ip, block), 0.0) >= idle and (router_id, ip, block) not in live
        ]

    def release(self, router_id: str, ip: int, block: int) -> None:
        blocks = self.held.get((router_id, ip), set())
        if block in blocks:
            blocks.discard(block)
            self.used_at.pop((router_id, ip, block), None)
            self.store.state_delete(SNAT_BLOCKS, f"{router_id}/{int_to_ip(ip)}/{block}")
            self.counters["snat_blocks_released"] += 1

    def forget(self) -> None:
        """The session that held the leases ended: they are gone from the store."""
        self.held.clear()
        self.used_at.clear()
