"""The flows this agent puts in the kernel, from a result to its removal: queued during a round, installed at
its end in one system call, their first packets executed (re-injected) once they are in, then entered in
the book; removed again by tag when what they depended on changes (invalidation), when their interface goes,
or by expiry and eviction (kumo.agent.expiry).

It also owns the caches derived from results, since invalidation must reach them together: the wildcard
table (results by the fields their simulation read), the key index (the same, by the kernel's key bytes) and
the kernel values (kumo.agent.values)."""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from kumo.agent.flows import FlowBook, KernelFlow, in_port_of
from kumo.agent.keyindex import KernelKeyIndex
from kumo.agent.masks import MaskTable
from kumo.agent.values import KernelValues
from kumo.datapath.actions import ct_query_value, with_ct_record
from kumo.datapath.conntrack import zone_of, zone_tags
from kumo.datapath.datapath import Datapath
from kumo.datapath.flowmaps import is_megaflow, mask_id_of
from kumo.datapath.offload import complete_checksum
from kumo.simulation.result import SimulationResult
from kumo.simulation.view import Snapshot
from kumo.simulation.walk import stateful_devices
from kumo.simulation.wildcard import WildcardTable

REFRESH_EVERY = 10.0  # seconds between two writes of a flow's state while it is in use (it lives 60 s)
LATENCY_SAMPLES = 4096  # upcall -> re-injection times kept for `kumo agent stats`


def _without_conntrack_tags(result: SimulationResult) -> SimulationResult:
    """`result` as a conntrack megaflow books it: the kernel answers its query per packet (the answer is in
    the key), so the conntrack entries it was simulated with do not invalidate it."""
    tags = {tag for tag in result.tags if not (isinstance(tag, tuple) and tag[0] == "conntrack")}
    return dataclasses.replace(result, tags=tags)


class KernelFlows:
    def __init__(
        self,
        datapath: Datapath,
        counters: collections.Counter[str],
        idle_timeout: float,
        stateful_idle_timeout: float,
        max_masks_per_port: int,
    ) -> None:
        self.datapath = datapath
        self.counters = counters
        self.idle_timeout = idle_timeout
        self.stateful_idle_timeout = stateful_idle_timeout
        self.wildcard = WildcardTable()
        self.by_key = KernelKeyIndex()  # the wildcard table's IPv4 TCP/UDP results, by the kernel's key
        self.values = KernelValues(datapath, counters)
        self.book = FlowBook()
        self.masks = MaskTable(datapath, counters, max_masks_per_port)  # which flows are megaflows
        self.kernel_conntrack = False  # the kernel tracks connections (local flow state: set by the agent)
        self.ct_tags: dict[str, int] = {}  # stateful device -> its zone's tag (kumo.datapath.conntrack.zone_tags)
        self.book.observers.append(self.masks)
        # the round's flows: installed at its end, entered in the book once their first packets are out
        self.pending: dict[bytes, tuple[KernelFlow, bytes]] = {}  # key -> (flow, the kernel value's bytes)
        self._injects: list[tuple[bytes, int, int, bytes]] = []  # (frame, ifindex, queued_ns, flow) once installed
        self.upcall_latency_us: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        self.latency_observer: Callable[[float], None] | None = None  # (seconds: the metrics' histogram)

    # --- a round: queue, then install, execute, book ------------------------------------------------------
    def queue(
        self,
        raw_key: bytes,
        result: SimulationResult,
        value: bytes,
        reinject: bool,
        frame: bytes,
        ifindex: int,
        queued_ns: int,
        truncated: bool,
        at_egress: bool | None = False,
    ) -> None:
        """The flow goes in at the end of the round (install_round), and its first packet after it: as a
        megaflow if the result is about its path and not about this connection (kumo.agent.masks), or as two
        when its connection tracking is left to the kernel. `at_egress`: None if the kernel may not track it
        (its state must reach hosts by a push, or Redis); True if the hosts of its tunnelled packets must
        record it from them (its record's zone then needs a tag)."""
        sample = raw_key
        staged = None
        ct = result.conntrack
        tag = self.ct_tags.get(ct.record or "", 0) if ct is not None and at_egress else 0
        if self.kernel_conntrack and ct is not None and at_egress is not None and (tag or not at_egress):
            staged = self.masks.conntrack_keys(raw_key, result)
        if staged is not None:
            assert ct is not None
            first, raw_key = staged
            result = _without_conntrack_tags(result)
            self.pending[first] = (KernelFlow(first, result, sample=sample), ct_query_value(zone_of(ct.device)))
            if ct.record is not None:
                value = with_ct_record(value, zone_of(ct.record), tag)
        elif not result.state_writes:
            raw_key = self.masks.key_for(raw_key, result) or raw_key
        flow = KernelFlow(raw_key, result, stateful=bool(result.state_writes), sample=sample)
        self.pending[raw_key] = (flow, value)
        self.values.note_flow(raw_key, value)
        self.counters["flows_installed"] += 1
        if reinject and truncated:
            self.counters["truncated_not_reinjected"] += 1  # a GSO packet: the sender retransmits
        elif reinject:
            self._injects.append((complete_checksum(frame), ifindex, queued_ns, raw_key))
            self.counters["reinjected"] += 1

    def forget_pending(self, keys: set[bytes]) -> None:
        """These queued flows are not to be installed (their state could not be made durable)."""
        for raw in keys:
            self.pending.pop(raw, None)

    def install_round(self, dropped: set[bytes]) -> None:
        """Install the round's flows in one system call and execute their first packets (but those of the
        flows in `dropped`), then book the flows."""
        if self.pending:
            self.datapath.install_many([(flow.key, value) for flow, value in self.pending.values()])
        injects, self._injects = self._injects, []
        try:
            for frame, ifindex, queued_ns, raw_key in injects:
                if raw_key in dropped:
                    continue
                self.datapath.inject(frame, ifindex)
                if queued_ns:
                    took_us = (time.monotonic_ns() - queued_ns) / 1000
                    self.upcall_latency_us.append(took_us)
                    if self.latency_observer is not None:
                        self.latency_observer(took_us / 1e6)
        finally:  # the book: after the packets (it is not on their path), and whatever befell them
            for flow, _ in self.pending.values():
                self.book.add(flow, self.next_look(flow, flow.created))
            self.pending.clear()

    def follow_stateful_devices(self, snapshot: Snapshot) -> None:
        """The zone tags of the topology's stateful devices: what tunnelled packets carry, and what this host's
        VXLAN program records them under."""
        self.ct_tags = zone_tags(stateful_devices(snapshot))
        self.datapath.set_ct_tags({tag: zone_of(device) for device, tag in self.ct_tags.items()})

    def maintain_masks(self) -> None:
        """Masks no megaflow uses leave the program's probe order; the others are tried most used first."""
        self.masks.maintain({mask_id_of(raw) for raw in self.pending if is_megaflow(raw)})

    # --- when a flow is looked at again (kumo.agent.expiry) -----------------------------------------------
    def timeout(self, flow: KernelFlow) -> float:
        return self.stateful_idle_timeout if flow.stateful else self.idle_timeout

    def next_look(self, flow: KernelFlow, active: float) -> float:
        """When a flow last active at `active` must be looked at again: when it would have been idle for its
        timeout, and for a stateful flow also when its state is due to be written again."""
        at = active + self.timeout(flow)
        return min(at, flow.refreshed + REFRESH_EVERY) if flow.stateful else at

    # --- removal ------------------------------------------------------------------------------------------
    def invalidate(self, tag: Any) -> None:
        self.wildcard.invalidate(tag)
        for raw in self.book.tagged(tag):
            self.remove(raw)

    def invalidate_all(self) -> None:
        self.wildcard = WildcardTable()
        for raw in self.book.booked():
            self.remove(raw)

    def remove(self, raw: bytes) -> None:
        self.pending.pop(raw, None)
        if self.book.pop(raw):
            self.datapath.remove(raw)
            self.counters["flows_removed"] += 1

    def remove_in_port(self, ifindex: int) -> None:
        """Every booked flow whose packets enter through interface `ifindex`."""
        for raw in self.book.booked():
            if in_port_of(raw) == ifindex:
                self.remove(raw)

    def collect_link_sets(self) -> None:
        """Flood link sets no booked or pending flow names any more go (with the key index, which may hold
        values naming them)."""
        if self.values.collect_link_sets(lambda raw: raw in self.book or raw in self.pending):
            self.by_key.clear()
