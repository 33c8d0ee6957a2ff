"""The flow book: flows by key, by the tags they depend on, and in the order they were booked."""

from __future__ import annotations

import gc
import time

from kumo.agent.flows import FlowBook, KernelFlow, in_port_of
from kumo.datapath.layout import FlowKey
from kumo.simulation.result import Reason, SimulationResult, Verdict


def flow(port: int, tags: set[str]) -> KernelFlow:
    key = FlowKey()
    key.in_port = port
    return KernelFlow(bytes(key), SimulationResult(Verdict.OUTPUT, Reason.FORWARDED, ["p"], tags=set(tags)))


def test_the_oldest_are_the_first_booked_and_a_replaced_flow_is_new() -> None:
    book = FlowBook()
    raws = [book.add(flow(port, {"bridge"}), 0.0) for port in range(1, 6)]
    assert book.oldest(2) == raws[:2]
    assert book.add(flow(1, {"router"}), 0.0) == raws[0]  # the same key again: a new flow
    assert book.oldest(2) == raws[1:3]
    assert book.oldest(10) == raws[1:] + raws[:1]
    assert book.oldest(0) == [] and book.oldest(-3) == []
    assert sorted(book.tagged("bridge")) == sorted(raws[1:])  # the replaced flow's old tags went with it
    assert book.tagged("router") == raws[:1]


def test_popping_a_flow_drops_its_tags() -> None:
    book = FlowBook()
    raw = book.add(flow(7, {"port-a", "chain-b"}), 0.0)
    assert book.pop(raw) and not book.pop(raw)
    assert book.tagged("port-a") == [] and len(book) == 0


def test_flows_are_handed_out_when_their_time_has_come_once_per_schedule() -> None:
    book = FlowBook()
    now = time.monotonic()
    soon, later = book.add(flow(1, {"a"}), now + 1.2), book.add(flow(2, {"a"}), now + 5.5)
    assert book.due(now) == []
    assert [raw for raw, _ in book.due(now + 2.5)] == [soon]  # (at most a second after its time)
    assert book.due(now + 2.5) == []  # handed out once: expiry schedules it again, or it is not looked at
    book.schedule(soon, now + 3.0)
    book.schedule(later, now + 3.0)  # looked at earlier than first planned: the older schedule is dropped
    assert sorted(raw for raw, _ in book.due(now + 4.5)) == sorted([soon, later])
    assert book.due(now + 10) == []
    book.schedule(soon, now - 100)  # a time already passed: the next slot to be handed out
    assert [raw for raw, _ in book.due(now + 11)] == [soon]
    book.schedule(later, now + 12)
    book.pop(later)  # gone meanwhile
    book.add(flow(1, {"b"}), now + 30)  # replaced (same key): the replacement's schedule counts
    assert book.due(now + 20) == []
    assert [raw for raw, _ in book.due(now + 32)] == [soon]


def test_the_input_port_is_read_from_the_key_bytes() -> None:
    assert in_port_of(flow(42, {"bridge"}).key) == 42


def test_a_flow_replaced_under_its_key_is_another_flow_and_keeps_what_it_was_booked_with() -> None:
    book = FlowBook()
    first = flow(3, {"a"})
    first.stateful, first.created, first.refreshed = True, 100.0, 100.0
    raw = book.add(first, 0.0)
    assert book.holds(raw, first) and raw in book and book.booked() == [raw]
    got = book.get(raw)
    assert got is not None and (got.created, got.stateful, got.result) == (100.0, True, first.result)
    book.refreshed(raw, 123.0)
    got = book.get(raw)
    assert got is not None and got.refreshed == 123.0 and book.holds(raw, got)
    second = flow(3, {"b"})  # (created now)
    book.add(second, 0.0)
    assert not book.holds(raw, first) and book.holds(raw, second)
    got = book.get(raw)
    assert got is not None and got.stateful is False and book.tagged("a") == [] and book.tagged("b") == [raw]
    book.refreshed(raw, 200.0)  # (a stateless flow's state is never written again)
    assert book.get(raw).refreshed == second.created  # type: ignore[union-attr]
    assert book.pop(raw)
    assert not book.holds(raw, second) and book.get(raw) is None and len(book) == 0


def test_the_book_keeps_no_object_per_flow_for_the_garbage_collector_to_visit() -> None:
    book, shared = FlowBook(), SimulationResult(Verdict.OUTPUT, Reason.FORWARDED, ["p"], tags={"a", "b"})
    for port in range(1, 200):
        book.add(KernelFlow(flow(port, set()).key, shared, stateful=port % 2 == 0), time.monotonic() + port % 5)
    tables = [value for value in vars(book).values() if isinstance(value, dict)]
    inner = [table for value in tables for table in value.values() if isinstance(table, dict)]
    # tracked: the results (the flows share them), and the few tables of tables (by tag, by second)
    assert sum(gc.is_tracked(table) for table in tables) == 3 and len(tables) == 6
    assert inner and not any(gc.is_tracked(table) for table in inner)
