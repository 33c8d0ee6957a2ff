"""Kernel values: the actions a result installs, as the bytes the kernel stores, made once per (result,
outputs) so that wildcard hits share them and a round's flows go to the kernel as one buffer of keys and one
of values.

A flood to more outputs than one value holds starts a chain of links in the flow map
(kumo.datapath.actions.flood_chunks): one link set per distinct tail of outputs, shared by every flow that
floods the same way, installed before the first flow that names it and removed once no flow names it."""

from __future__ import annotations

import collections
from collections.abc import Callable

from kumo.datapath.actions import Out, flood_chunks, flood_links, flow_value, link_key
from kumo.datapath.datapath import Datapath
from kumo.datapath.layout import MAX_OUT
from kumo.simulation.result import SimulationResult

VALUES_CACHED = 10_000  # (result, outputs) pairs kept; the cache starts again empty beyond


class KernelValues:
    def __init__(self, datapath: Datapath, counters: collections.Counter[str]) -> None:
        self.datapath = datapath
        self.counters = counters
        self._values: dict[tuple[int, tuple[Out, ...]], tuple[SimulationResult, bytes]] = {}
        self._link_sets: dict[tuple[tuple[Out, ...], ...], int] = {}  # a chain's tail (a link per chunk) -> its set
        self._set_of_value: dict[bytes, int] = {}  # a value that starts a chain -> its link set
        self._chained_flows: dict[bytes, int] = {}  # the key of a flow whose value starts a chain -> its set
        self.next_link_set = 1

    def value_of(self, result: SimulationResult, outputs: list[Out]) -> bytes:
        """The kernel value (actions) of a result as bytes."""
        cache_key = (id(result), tuple(outputs))
        cached = self._values.get(cache_key)
        if cached is not None and cached[0] is result:
            return cached[1]
        if len(self._values) > VALUES_CACHED:
            self._values.clear()
        if len(outputs) > MAX_OUT:  # a long flood: the flow's value starts a chain of links
            first, *tail = flood_chunks(outputs)
            link_set = self._link_set(tail)
            value = bytes(flow_value(result, first, next_link=(link_set, 1)))
            self._set_of_value[value] = link_set
        else:
            value = bytes(flow_value(result, outputs))
        self._values[cache_key] = (result, value)  # (holding the result keeps its id from being reused)
        return value

    def note_flow(self, raw_key: bytes, value: bytes) -> None:
        """The flow `raw_key` is installed with `value`: if that starts a chain, the flow keeps its link set."""
        if not self._set_of_value:
            return
        link_set = self._set_of_value.get(value)
        if link_set is not None:
            self._chained_flows[raw_key] = link_set

    def _link_set(self, tail: list[list[Out]]) -> int:
        """The link set holding a long flood's outputs after its first value's, installed now if new (so
        that it is in the kernel before any flow that names it)."""
        shape = tuple(tuple(chunk) for chunk in tail)
        link_set = self._link_sets.get(shape)
        if link_set is None:
            link_set, self.next_link_set = self.next_link_set, self.next_link_set + 1
            links = flood_links(link_set, tail)
            self.datapath.install_many(links)
            self._link_sets[shape] = link_set
        return link_set

    def collect_link_sets(self, installed: Callable[[bytes], bool]) -> bool:
        """Remove the link sets that no flow `installed` (booked or pending) names any more, with every
        cached value that names them. True if any went: then the caller drops what else caches these values
        (the key index), since a later hit must not install a flow naming a removed set."""
        for raw in [raw for raw in self._chained_flows if not installed(raw)]:
            del self._chained_flows[raw]
        live = set(self._chained_flows.values())
        dead = {shape: link_set for shape, link_set in self._link_sets.items() if link_set not in live}
        if not dead:
            return False
        self._values.clear()
        self._set_of_value = {value: s for value, s in self._set_of_value.items() if s in live}
        self._link_sets = {shape: s for shape, s in self._link_sets.items() if s in live}
        for shape, link_set in dead.items():
            for index in range(1, len(shape) + 1):  # one link per chunk of the tail (flood_links)
                self.datapath.remove(link_key(link_set, index))
        self.counters["flood_link_sets_removed"] += len(dead)
        return True
