"""The kernel flows this agent installed, with why each exists (the result's tags), indexed by tag so
that a change removes exactly the flows that depended on it, and by when each must next be looked at for
idle expiry (a flow used at time t cannot be idle before t + its timeout: looking at every flow every
second cost ~0.15 s of CPU and GIL a second at 100,000 flows, and delayed first packets by milliseconds)."""

from __future__ import annotations

import itertools
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from kumo.datapath.layout import FlowKey
from kumo.simulation.result import SimulationResult

_IN_PORT = struct.Struct("=I")  # FlowKey.in_port, read straight from the key's bytes


@dataclass(slots=True)
class KernelFlow:
    # The kernel key's bytes, not a FlowKey: bytes are not tracked by the garbage collector, a ctypes object
    # is, and every tracked object per flow lengthens each collection at 100,000 flows.
    key: bytes
    result: SimulationResult
    created: float = field(default_factory=time.monotonic)
    stateful: bool = False  # it wrote flow state (conntrack, NAT): shorter idle timeout, state refreshed
    refreshed: float = field(default_factory=time.monotonic)  # when its state was last written again
    check_slot: int = 0  # the second (monotonic clock) when expiry looks at it next (0: not scheduled)

    @property
    def in_port(self) -> int:
        return int(_IN_PORT.unpack_from(self.key, FlowKey.in_port.offset)[0])


class FlowBook:
    def __init__(self) -> None:
        self.flows: dict[bytes, KernelFlow] = {}  # in the order booked: oldest first
        self._by_tag: dict[Any, set[bytes]] = {}
        self._slots: dict[int, list[bytes]] = {}  # second -> flows to look at then (stale entries skipped)
        self._handed_out = int(time.monotonic())  # the slots up to this one have been handed out

    def __len__(self) -> int:
        return len(self.flows)

    def add(self, flow: KernelFlow, check_at: float) -> bytes:
        """Book `flow`, to be looked at for idle expiry at `check_at` (see schedule)."""
        raw = flow.key
        old = self.flows.pop(raw, None)  # (popped, so that a replaced flow goes to the end: it is new)
        if old is not None:
            self._untag(raw, old)
        self.flows[raw] = flow
        for tag in flow.result.tags:
            self._by_tag.setdefault(tag, set()).add(raw)
        self.schedule(raw, check_at)
        return raw

    def pop(self, raw: bytes) -> KernelFlow | None:
        flow = self.flows.pop(raw, None)
        if flow is not None:
            self._untag(raw, flow)
        return flow

    def tagged(self, tag: Any) -> list[bytes]:
        return list(self._by_tag.get(tag, ()))

    def _untag(self, raw: bytes, flow: KernelFlow) -> None:
        for tag in flow.result.tags:
            refs = self._by_tag.get(tag)
            if refs is not None:
                refs.discard(raw)
                if not refs:
                    del self._by_tag[tag]

    def schedule(self, raw: bytes, at: float) -> None:
        """Look at flow `raw` again at time `at` (at the latest one second after; never in the past)."""
        flow = self.flows.get(raw)
        if flow is None:
            return
        slot = max(int(at) + 1, self._handed_out + 1)
        flow.check_slot = slot
        self._slots.setdefault(slot, []).append(raw)

    def due(self, now: float) -> list[tuple[bytes, KernelFlow]]:
        """The flows whose time to be looked at has come (each handed out once per schedule)."""
        out = []
        while self._handed_out < int(now):
            self._handed_out += 1
            for raw in self._slots.pop(self._handed_out, ()):
                flow = self.flows.get(raw)
                if flow is not None and flow.check_slot == self._handed_out:  # (else rescheduled, or gone)
                    flow.check_slot = 0
                    out.append((raw, flow))
        return out

    def oldest(self, count: int) -> list[bytes]:
        """The `count` flows booked first. (Not a sort by age: that held the agent's lock for ~100 ms at
        100,000 flows, on every expiry pass while the book was over its maximum.)"""
        return list(itertools.islice(self.flows, max(count, 0)))
