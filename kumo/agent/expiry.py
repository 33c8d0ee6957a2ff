"""Idle expiry, state refresh and eviction, in a thread of its own.

The map reads run here (ctypes lets go of the GIL during each system call), and the agent's lock is held only
to remove a batch, so upcalls never wait behind a sweep. Each pass looks only at the flows whose time has
come (FlowBook.due): it expires those idle for their timeout, writes again the state of stateful flows used
since it was last written (so that conntrack and NAT entries in use never expire), and looks again later at
the rest. Then expired flow state goes, idle SNAT blocks are given back, and the oldest flows beyond
--max-flows are evicted."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kumo.agent.flows import KernelFlow
from kumo.agent.kernelflows import REFRESH_EVERY, KernelFlows
from kumo.datapath.datapath import Datapath
from kumo.flowstate.local import LocalFlowState
from kumo.flowstate.redis import RedisFlowState
from kumo.flowstate.snat_blocks import SnatBlocks

log = logging.getLogger("kumo.agent")

EXPIRY_PERIOD = 1.0  # seconds between passes over the flows for idle expiry
EXPIRY_BATCH = 200  # flows checked between two short holds of the lock
EXPIRY_READ_ALL_OVER = 2000  # flows due at once above which (and a quarter of all) the kernel's are read in batches


@dataclass(eq=False)
class Expiry:
    lock: threading.RLock
    stop: threading.Event
    datapath: Datapath
    flows: KernelFlows
    flow_state: LocalFlowState | RedisFlowState
    snat_blocks: SnatBlocks | None
    max_flows: int
    counters: collections.Counter[str]

    def run(self) -> None:
        while not self.stop.wait(EXPIRY_PERIOD):
            try:
                self.expire_pass()
            except Exception:
                self.counters["agent_errors"] += 1
                log.exception("expiry")

    def expire_pass(self) -> None:
        """Look at the flows whose time has come. The kernel's last-use times are read one flow at a time, or
        all in batches when many are due."""
        flows, book = self.flows, self.flows.book
        with self.lock:
            due = book.due(time.monotonic())
        if len(due) > max(EXPIRY_READ_ALL_OVER, len(book) // 4):
            last_used: Callable[[bytes], int | None] = self.datapath.last_used().get
        else:
            last_used = self.datapath.last_used_of
        for start in range(0, len(due), EXPIRY_BATCH):
            if self.stop.is_set():
                return
            time.sleep(0)  # let a woken packet thread have the GIL now, not at the end of a switch interval
            idle_out: list[tuple[bytes, KernelFlow]] = []
            gone: list[tuple[bytes, KernelFlow]] = []
            in_use: list[KernelFlow] = []
            later: list[tuple[bytes, KernelFlow, float]] = []
            for raw, flow in due[start : start + EXPIRY_BATCH]:
                used_ns = last_used(raw)  # bpf_ktime_get_ns: the clock of time.monotonic; 0: not used yet
                now = time.monotonic()
                if used_ns is None:
                    gone.append((raw, flow))
                    continue
                active = max(used_ns / 1e9, flow.created)
                if now - active > flows.timeout(flow):
                    idle_out.append((raw, flow))
                    continue
                if flow.stateful and active > flow.refreshed and now - flow.refreshed >= REFRESH_EVERY:
                    in_use.append(flow)
                later.append((raw, flow, active))
            with self.lock:
                for raw, flow in idle_out:
                    if book.holds(raw, flow):  # not replaced meanwhile
                        flows.remove(raw)
                        self.counters["flows_expired"] += 1
                for raw, flow in gone:
                    if book.holds(raw, flow) and raw not in flows.pending:
                        book.pop(raw)
                now = time.monotonic()
                for flow in in_use:  # keep the conntrack/NAT state of flows in use alive
                    flow.refreshed = now
                    book.refreshed(flow.key, now)
                    for write in flow.result.state_writes:
                        self.flow_state.record(write.kind, write.key, write.value)
                for raw, flow, active in later:
                    if book.holds(raw, flow):
                        book.schedule(raw, flows.next_look(flow, active))
        self._expire_state()
        with self.lock:
            excess = len(book) - self.max_flows
            for raw in book.oldest(excess) if excess > 0 else []:
                flows.remove(raw)
                self.counters["flows_evicted"] += 1

    def _expire_state(self) -> None:
        """Expired conntrack/NAT entries go; SNAT blocks idle for twice the stateful timeout are given back."""
        expired = self.flow_state.expired_keys()  # (filtered without the lock: tables may be large)
        with self.lock:
            self.flow_state.drop_expired(expired)
            blocks = self.snat_blocks
            idle_blocks = blocks.idle_blocks(2 * self.flows.stateful_idle_timeout) if blocks else []
        for block in idle_blocks:  # (a store round trip each: outside the lock)
            assert blocks is not None
            try:
                blocks.release(*block)
            except Exception as exc:
                log.warning("releasing SNAT block %s: %s", block, exc)
