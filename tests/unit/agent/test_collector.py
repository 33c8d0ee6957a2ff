"""The agent's garbage collection: automatic collection off while it serves, CPython's generational
schedule run by the packet thread instead, full collections rate-limited."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from kumo.agent import collector as collector_module
from kumo.agent.collector import Collector


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


@pytest.fixture
def taken() -> Iterator[Collector]:
    was_enabled = gc.isenabled()
    c = Collector()
    c.take_over()
    try:
        yield c
    finally:
        c.give_back()
        gc.unfreeze()
        assert gc.isenabled() == was_enabled


def test_automatic_collection_is_off_and_what_existed_is_frozen(taken: Collector) -> None:
    assert not gc.isenabled()
    assert gc.get_freeze_count() > 0


def test_cyclic_garbage_is_freed_once_the_young_threshold_is_crossed(taken: Collector) -> None:
    taken.thresholds = (100, 10, 10)
    freed: list[int] = []
    garbage = Node()
    weakref.finalize(garbage, freed.append, 1)
    del garbage
    assert taken.collect_if_due() is None  # few allocations so far: not due, nothing freed
    assert freed == []
    keep = [[] for _ in range(300)]
    assert taken.collect_if_due() == 0
    assert freed == [1]
    assert keep
    assert taken.longest_ms[0] > 0 and taken.longest_ms[1:] == [0.0, 0.0]  # the pause it took, kept


def test_older_generations_follow_cpythons_schedule_with_full_ones_rate_limited(
    taken: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken.thresholds = (50, 2, 2)
    keep: list[list[int]] = []

    def rounds(n: int) -> list[int | None]:
        out = []
        for _ in range(n):
            keep.extend([] for _ in range(200))
            out.append(taken.collect_if_due())
        return out

    assert rounds(9) == [0, 0, 1, 0, 0, 1, 0, 0, 1]  # the full one was due, but the last was < 10 s ago
    monkeypatch.setattr(collector_module, "FULL_COLLECTION_EVERY", 0.0)
    assert rounds(3) == [0, 0, 2]
    assert taken.collections == [8, 3, 1]
