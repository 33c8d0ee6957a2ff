"""A round's Redis lookups answered together (kumo.agent.provisional): a real Redis on loopback."""

from __future__ import annotations

import collections
from typing import Any, cast

import pytest

from kumo.agent.kernelflows import KernelFlows
from kumo.agent.provisional import Packet, Provisional, ProvisionalResults
from kumo.flowstate.redis import FlowStateUnavailable, RedisFlowState
from kumo.packet import ip_to_int
from kumo.packet.flowmatch import FlowMatch
from kumo.simulation.result import Reason, SimulationResult, StateWrite, Verdict
from kumo.simulation.view import NatTarget
from kumo.testing.redis import RedisServer

EXT = ip_to_int("192.0.2.10")
DST = ip_to_int("198.51.100.7")
VM = ip_to_int("10.0.1.11")


class Invalidated:
    """What ProvisionalResults asks of the kernel flows: the tags it invalidates, kept to be looked at."""

    def __init__(self) -> None:
        self.tags: list[Any] = []

    def invalidate(self, tag: Any) -> None:
        self.tags.append(tag)


def provisional(state: RedisFlowState) -> tuple[ProvisionalResults, Invalidated, collections.Counter[str]]:
    flows, counters = Invalidated(), collections.Counter[str]()
    return ProvisionalResults(state, cast(KernelFlows, flows), counters), flows, counters


def held(name: str, recorded: list[StateWrite], unconfirmed: set[Any]) -> Provisional:
    packet = Packet(name.encode(), 1, "port", False, 0, 0, None)
    return Provisional(packet, FlowMatch(), SimulationResult(Verdict.OUTPUT, Reason.FORWARDED), recorded, unconfirmed)


def test_a_miss_in_a_round_is_answered_at_once_and_looked_up_with_the_others_in_one_call(
    redis_server: RedisServer,
) -> None:
    writer, state = RedisFlowState(redis_server.url), RedisFlowState(redis_server.url)
    known = ("snat", "r1", 17, DST, 53, EXT, 20001)
    writer.record("nat", known, (VM, 40000))
    writer.flush()
    state.deferring = True
    assert state.nat_get(known) is None  # (deferred: no call yet)
    assert not state.conntrack_has((17, VM, 40001, DST, 53, "b"))
    assert state.counters["flow_state_redis_lookups"] == 0
    assert state.take_unconfirmed() == {("nat", known), ("conntrack", (17, VM, 40001, DST, 53, "b"))}
    found = state.look_up_deferred()
    assert found == {("nat", known): b"[167772427,40000]"}
    assert state.counters["flow_state_redis_batches"] == 1 and state.counters["flow_state_redis_lookups"] == 2
    state.adopt_found(found)
    state.deferring = False
    assert state.nat_get(known) == (VM, 40000)  # adopted: local now
    assert not state.conntrack_has((17, VM, 40001, DST, 53, "b"))  # known absent this round: no second call
    assert state.counters["flow_state_redis_lookups"] == 2
    state.round_settled()
    assert not state.conntrack_has((17, VM, 40001, DST, 53, "b"))  # a later round asks again
    assert state.counters["flow_state_redis_lookups"] == 3


def test_an_undone_result_leaves_no_record_no_write_and_no_port_behind(redis_server: RedisServer) -> None:
    state = RedisFlowState(redis_server.url)
    fwd = ("snat-fwd", "r1", 17, VM, 40002, DST, 53)
    targets = [NatTarget(EXT, EXT, 20000, 20000)]  # one port: taken while the binding lives
    chosen = state.snat_allocate("r1", targets, (17, DST, 53, VM, 40002))
    assert chosen == (EXT, 20000)
    writes = [StateWrite("nat", fwd, chosen), StateWrite("conntrack", (17, VM, 40002, DST, 53, "b"))]
    for write in writes:
        state.record(write.kind, write.key, write.value)
    assert state.snat_allocate("r1", targets, (17, DST, 53, VM, 40003)) is None
    state.forget(writes)
    assert state.local.nat == {} and state.local.conntrack == {}
    assert state.snat_allocate("r1", targets, (17, DST, 53, VM, 40003)) == (EXT, 20000)  # the port is free
    state.flush()
    assert state.client.exists("kumo:fs:conntrack:" + '[17,167772427,40002,3325256711,53,"b"]') == 0


def test_what_an_undone_result_recorded_undoes_its_readers_and_nothing_else(redis_server: RedisServer) -> None:
    writer, state = RedisFlowState(redis_server.url), RedisFlowState(redis_server.url)
    elsewhere = ("snat-fwd", "r1", 6, VM, 40010, DST, 80)  # a migrated VM's binding, made on its earlier host
    writer.record("nat", elsewhere, (EXT, 20500))
    writer.flush()
    results, flows, counters = provisional(state)
    results.begin_round()
    # the flow's first packet: the binding is missed (deferred), and a new one recorded
    assert state.nat_get(elsewhere) is None
    mine = StateWrite("nat", elsewhere, (EXT, 20999))
    state.record(mine.kind, mine.key, mine.value)
    results.hold(held("first", [mine], state.take_unconfirmed()))
    # its second packet in the same round reads the new binding: it stands or falls with the first
    assert state.nat_get(elsewhere) == (EXT, 20999)
    results.hold(held("second", [], state.take_unconfirmed()))
    # another flow, whose miss Redis confirms
    assert not state.conntrack_has((6, VM, 40011, DST, 80, "b"))
    results.hold(held("other", [], state.take_unconfirmed()))
    standing, again = results.settle()
    assert [one.packet.frame for one in standing] == [b"other"]
    assert [packet.frame for packet in again] == [b"first", b"second"]
    assert state.nat_get(elsewhere) == (EXT, 20500)  # the binding found in Redis, not the undone one
    assert ("nat", elsewhere) in flows.tags
    assert counters["provisional_results_redone"] == 2
    results.end_round()
    state.flush()
    assert writer.client.get('kumo:fs:nat:["snat-fwd","r1",6,167772427,40010,3325256711,80]') == b"[3221225994,20500]"


def test_redis_down_at_the_rounds_lookup_fails_the_rounds_new_state_closed() -> None:
    with RedisServer() as server:
        state = RedisFlowState(server.url)
        results, _, _ = provisional(state)
        results.begin_round()
        assert not state.conntrack_has((6, VM, 40020, DST, 80, "b"))
        state.record("conntrack", (6, VM, 40020, DST, 80, "b"))
        results.hold(held("new", [], state.take_unconfirmed()))
        server.stop()
        standing, again = results.settle()
        assert len(standing) == 1 and again == []  # (a failed lookup is a miss)
        assert state.counters["flow_state_lookup_errors"] == 1
        with pytest.raises(FlowStateUnavailable):
            state.flush()
