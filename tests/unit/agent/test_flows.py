"""The flow book: flows by key, by the tags they depend on, and in the order they were booked."""

from __future__ import annotations

from kumo.agent.flows import FlowBook, KernelFlow
from kumo.datapath.layout import FlowKey
from kumo.simulation.result import Reason, SimulationResult, Verdict


def flow(port: int, tags: set[str]) -> KernelFlow:
    key = FlowKey()
    key.in_port = port
    return KernelFlow(key, SimulationResult(Verdict.OUTPUT, Reason.FORWARDED, ["p"], tags=set(tags)))


def test_the_oldest_are_the_first_booked_and_a_replaced_flow_is_new() -> None:
    book = FlowBook()
    raws = [book.add(flow(port, {"bridge"})) for port in range(1, 6)]
    assert book.oldest(2) == raws[:2]
    assert book.add(flow(1, {"router"})) == raws[0]  # the same key again: a new flow
    assert book.oldest(2) == raws[1:3]
    assert book.oldest(10) == raws[1:] + raws[:1]
    assert book.oldest(0) == [] and book.oldest(-3) == []
    assert sorted(book.tagged("bridge")) == sorted(raws[1:])  # the replaced flow's old tags went with it
    assert book.tagged("router") == raws[:1]


def test_popping_a_flow_drops_its_tags() -> None:
    book = FlowBook()
    raw = book.add(flow(7, {"port-a", "chain-b"}))
    assert book.pop(raw) is not None and book.pop(raw) is None
    assert book.tagged("port-a") == [] and len(book) == 0
