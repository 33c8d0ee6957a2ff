"""The kernel flows this agent installed, with why each exists (the result's tags), indexed by tag so
that a change removes exactly the flows that depended on it, and by when each must next be looked at for
idle expiry (a flow used at time t cannot be idle before t + its timeout: looking at every flow every
second cost ~0.15 s of CPU and GIL a second at 100,000 flows, and delayed first packets by milliseconds).

The book keeps each flow as plain values in dictionaries keyed by the kernel key (bytes), not as an object
per flow. Python's garbage collector visits every object it tracks and every pointer of every container it
tracks; a dictionary holding only bytes, numbers and None is not tracked at all. With an object per flow
(and sets and lists of keys), a full collection at 100,000 flows visited ~1.5 million pointers, one cache
miss each: 64-101 ms during which no upcall was served; now 9-16 ms. Only the dictionary of results is
tracked (flows served from the key index share one result; a flow simulated on its own has its own)."""

from __future__ import annotations

import itertools
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from kumo.datapath.layout import FlowKey
from kumo.simulation.result import SimulationResult

_IN_PORT = struct.Struct("=I")  # FlowKey.in_port, read straight from the key's bytes


def in_port_of(raw: bytes) -> int:
    """The input interface (ifindex) of the kernel key `raw`."""
    return int(_IN_PORT.unpack_from(raw, FlowKey.in_port.offset)[0])


@dataclass(slots=True)
class KernelFlow:
    """A flow as the agent hands it around (the book stores its fields, not this object)."""

    key: bytes  # the kernel key's bytes
    result: SimulationResult
    created: float = field(default_factory=time.monotonic)  # (also tells it from a later flow of its key)
    stateful: bool = False  # it wrote flow state (conntrack, NAT): shorter idle timeout, state refreshed
    refreshed: float = field(default_factory=time.monotonic)  # when its state was last written again
    sample: bytes = b""  # a megaflow's: the exact key of the packet it was made for (observers may read it)


class BookObserver(Protocol):
    """Told of every flow booked and unbooked (kumo.agent.arpanswers, kumo.agent.masks)."""

    def booked(self, raw: bytes, result: SimulationResult, sample: bytes) -> None: ...

    def unbooked(self, raw: bytes) -> None: ...


class FlowBook:
    def __init__(self) -> None:
        self.observers: list[BookObserver] = []  # told of every flow booked and unbooked
        self._results: dict[bytes, SimulationResult] = {}  # in the order booked: oldest first
        self._created: dict[bytes, float] = {}
        self._refreshed: dict[bytes, float] = {}  # the stateful flows only
        self._by_tag: dict[Any, dict[bytes, None]] = {}  # (dictionaries as sets: a set is always tracked)
        self._check_slot: dict[bytes, int] = {}  # the second (monotonic clock) when expiry looks at it next
        self._slots: dict[int, dict[bytes, None]] = {}  # second -> flows to look at then (stale ones skipped)
        self._handed_out = int(time.monotonic())  # the slots up to this one have been handed out

    def __len__(self) -> int:
        return len(self._results)

    def __contains__(self, raw: bytes) -> bool:
        return raw in self._results

    def booked(self) -> list[bytes]:
        """Every booked flow's key, oldest first (a copy: flows may be removed while it is walked)."""
        return list(self._results)

    def add(self, flow: KernelFlow, check_at: float) -> bytes:
        """Book `flow`, to be looked at for idle expiry at `check_at` (see schedule)."""
        raw = flow.key
        if raw in self._results:
            self.pop(raw)  # (a replaced flow goes to the end: it is new)
        self._results[raw] = flow.result
        self._created[raw] = flow.created
        if flow.stateful:
            self._refreshed[raw] = flow.refreshed
        for tag in flow.result.tags:
            self._by_tag.setdefault(tag, {})[raw] = None
        self.schedule(raw, check_at)
        for observer in self.observers:
            observer.booked(raw, flow.result, flow.sample)
        return raw

    def get(self, raw: bytes) -> KernelFlow | None:
        result = self._results.get(raw)
        if result is None:
            return None
        created = self._created[raw]
        refreshed = self._refreshed.get(raw)
        return KernelFlow(raw, result, created, refreshed is not None, created if refreshed is None else refreshed)

    def holds(self, raw: bytes, flow: KernelFlow) -> bool:
        """Whether `flow` is still booked (not removed, nor replaced by a later flow of the same key)."""
        return self._created.get(raw) == flow.created

    def refreshed(self, raw: bytes, at: float) -> None:
        """The state of stateful flow `raw` was written again at `at`."""
        if raw in self._refreshed:
            self._refreshed[raw] = at

    def pop(self, raw: bytes) -> bool:
        """Remove flow `raw`; False if it was not booked."""
        result = self._results.pop(raw, None)
        if result is None:
            return False
        del self._created[raw]
        for observer in self.observers:
            observer.unbooked(raw)
        self._refreshed.pop(raw, None)
        self._check_slot.pop(raw, None)
        for tag in result.tags:
            refs = self._by_tag.get(tag)
            if refs is not None:
                refs.pop(raw, None)
                if not refs:
                    del self._by_tag[tag]
        return True

    def tagged(self, tag: Any) -> list[bytes]:
        return list(self._by_tag.get(tag, ()))

    def schedule(self, raw: bytes, at: float) -> None:
        """Look at flow `raw` again at time `at` (at the latest one second after; never in the past)."""
        if raw not in self._results:
            return
        slot = max(int(at) + 1, self._handed_out + 1)
        self._check_slot[raw] = slot
        self._slots.setdefault(slot, {})[raw] = None

    def due(self, now: float) -> list[tuple[bytes, KernelFlow]]:
        """The flows whose time to be looked at has come (each handed out once per schedule)."""
        out = []
        while self._handed_out < int(now):
            self._handed_out += 1
            for raw in self._slots.pop(self._handed_out, ()):
                if self._check_slot.get(raw) == self._handed_out:  # (else rescheduled, or gone)
                    del self._check_slot[raw]
                    flow = self.get(raw)
                    assert flow is not None  # (a slot is only set for a booked flow, and goes with it)
                    out.append((raw, flow))
        return out

    def oldest(self, count: int) -> list[bytes]:
        """The `count` flows booked first. (Not a sort by age: that held the agent's lock for ~100 ms at
        100,000 flows, on every expiry pass while the book was over its maximum.)"""
        return list(itertools.islice(self._results, max(count, 0)))
