"""Python's garbage collector, run by the packet thread between rounds instead of inside one.

CPython collects when an allocation crosses a threshold, wherever that allocation happens: measured in
the agent, the young generation (~150 us) interrupted one first packet in ten, and the middle generation
(~2 ms on this machine) one in a hundred, which was the whole p99 of first-packet latency. So the agent
turns automatic collection off and runs the same generational schedule itself, after a round's packets
have been re-injected (and at least every 50 ms when idle): a collection can delay the next upcall, never
one being served.

The objects alive once the agent has started (modules, the API application, the topology, adopted flows)
are moved out of the collector's sight (`gc.freeze`): they are never garbage, and scanning them made
every full collection cost tens of milliseconds. Full collections are rate-limited, since their cost
grows with the number of installed flows (CPython's own limit, 25 % growth of the old generation, is not
visible from Python).
"""

from __future__ import annotations

import gc
import time

GENERATIONS = ("young", "middle", "full")  # CPython's generations 0, 1, 2
FULL_COLLECTION_EVERY = 10.0  # seconds, at least, between collections of the oldest generation


class Collector:
    def __init__(self) -> None:
        self.thresholds = gc.get_threshold()
        self.collections = [0, 0, 0]
        self.longest_ms = [0.0, 0.0, 0.0]  # the longest pause of each generation (the next upcall waits it)
        self._was_enabled = False
        self._last_full = time.monotonic()

    def take_over(self) -> None:
        """Freeze what exists now and stop automatic collection (from then on: `collect_if_due`)."""
        self._was_enabled = gc.isenabled()
        gc.collect()
        gc.freeze()
        gc.disable()
        self._last_full = time.monotonic()

    def give_back(self) -> None:
        if self._was_enabled:
            gc.enable()

    def collect_if_due(self) -> int | None:
        """CPython's schedule: the young generation after `threshold0` net allocations, an older one after
        `threshold` collections of the next younger. Returns the generation collected, if any."""
        young, middle, old = gc.get_count()
        t0, t1, t2 = self.thresholds
        if young < t0:
            return None
        generation = 0
        if middle >= t1:
            generation = 1
            if old >= t2 and time.monotonic() - self._last_full >= FULL_COLLECTION_EVERY:
                generation = 2
        started = time.perf_counter()
        gc.collect(generation)
        took_ms = (time.perf_counter() - started) * 1000
        self.longest_ms[generation] = max(self.longest_ms[generation], took_ms)
        if generation == 2:
            self._last_full = time.monotonic()
        self.collections[generation] += 1
        return generation
