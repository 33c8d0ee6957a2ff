"""Provisional results: a round's Redis lookups answered together (shared flow state, kumo.flowstate.redis).

A simulation that misses the local tables does not wait on Redis. The miss is answered "absent" at once,
which is what Redis almost always says: the hosts that may see a flow's return traffic had its state pushed
before its first packet (kumo.agent.sharing). The key is noted and the simulation goes on. Its result is
provisional:
- it is recorded locally, so a second packet of the flow in the same round finds the same binding;
- nothing it decided leaves the agent (no packet sent, no flow queued, nothing pushed, written or cached)
  until the round's end, where one MGET answers every key the round noted.
A result whose keys Redis does not hold stands and is acted on. One whose key Redis holds (after a restart,
a migration, a lost push) is undone: its records are forgotten, its pending writes dropped, the found state
adopted, and its packet served again. So is any provisional result that read what an undone one recorded.
Redis failing to answer is a failed lookup, as before: the results stand, and the round's new state fails
closed at the flush."""

from __future__ import annotations

import collections
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import NamedTuple

from kumo.agent.kernelflows import KernelFlows
from kumo.flowstate.redis import RedisFlowState, StateKey
from kumo.packet.flowmatch import FlowMatch
from kumo.simulation.result import SimulationResult, StateWrite


class Packet(NamedTuple):
    """A packet being served, as UpcallServer.process takes it."""

    frame: bytes
    ifindex: int
    port_id: str
    truncated: bool
    reason: int
    queued_ns: int
    kernel_key: bytes | None


@dataclass(eq=False)
class Provisional:
    packet: Packet
    match: FlowMatch  # (as the simulation left it: what it read)
    result: SimulationResult
    recorded: list[StateWrite]
    unconfirmed: AbstractSet[StateKey]  # read without a final answer: deferred, or recorded by another provisional one


class ProvisionalResults:
    def __init__(self, flow_state: RedisFlowState, flows: KernelFlows, counters: collections.Counter[str]) -> None:
        self.flow_state = flow_state
        self.flows = flows
        self.counters = counters
        self._held: list[Provisional] = []

    def begin_round(self) -> None:
        self.flow_state.deferring = True

    def hold(self, held: Provisional) -> None:
        self.flow_state.hold(held.recorded)
        self._held.append(held)
        self.counters["provisional_results"] += 1

    def settle(self) -> tuple[list[Provisional], list[Packet]]:
        """The round's deferred keys looked up: the results that stand, and the packets to serve again (now
        with lookups made at once)."""
        state = self.flow_state
        state.deferring = False
        held, self._held = self._held, []
        found = state.look_up_deferred()
        changed = set(found)
        standing: list[Provisional] = []
        again: list[Packet] = []
        for one in held:  # (in the order served: a result can only have read what an earlier one recorded)
            if one.unconfirmed.isdisjoint(changed):
                standing.append(one)
                continue
            state.forget(one.recorded)
            changed.update((write.kind, write.key) for write in one.recorded)
            again.append(one.packet)
        state.adopt_found(found)
        for key in found:
            self.flows.invalidate(key)  # results cached before this state was known here
        state.confirm_provisional()
        self.counters["provisional_results_redone"] += len(again)
        return standing, again

    def end_round(self) -> None:
        self.flow_state.round_settled()
