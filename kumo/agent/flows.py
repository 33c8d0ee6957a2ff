"""The kernel flows this agent installed, with why each exists (the result's tags), indexed by tag so
that a change removes exactly the flows that depended on it."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from kumo.datapath.layout import FlowKey
from kumo.simulation.result import SimulationResult


@dataclass(slots=True)
class KernelFlow:
    key: FlowKey
    result: SimulationResult
    created: float = field(default_factory=time.monotonic)
    stateful: bool = False  # it wrote flow state (conntrack, NAT): shorter idle timeout, state refreshed
    refreshed: float = field(default_factory=time.monotonic)  # when its state was last written again


class FlowBook:
    def __init__(self) -> None:
        self.flows: dict[bytes, KernelFlow] = {}  # in the order booked: oldest first
        self._by_tag: dict[Any, set[bytes]] = {}

    def __len__(self) -> int:
        return len(self.flows)

    def add(self, flow: KernelFlow) -> bytes:
        raw = bytes(flow.key)
        old = self.flows.pop(raw, None)  # (popped, so that a replaced flow goes to the end: it is new)
        if old is not None:
            self._untag(raw, old)
        self.flows[raw] = flow
        for tag in flow.result.tags:
            self._by_tag.setdefault(tag, set()).add(raw)
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

    def oldest(self, count: int) -> list[bytes]:
        """The `count` flows booked first. (Not a sort by age: that held the agent's lock for ~100 ms at
        100,000 flows, on every expiry pass while the book was over its maximum.)"""
        return list(itertools.islice(self.flows, max(count, 0)))
