"""A round's new flow state (conntrack keys, NAT bindings), made durable and shared before its packets leave.

With shared flow state (Redis) the round's writes are flushed at its end; if the store does not take them,
the round's stateful flows are neither installed nor forwarded (fail closed: their replies could not be
recognised elsewhere; the sender retransmits). Each new flow's state is also pushed (kumo.agent.push) to the
hosts that may see its return traffic: the egress port's host and the hosts of ports sharing a stateful
port group with the ingress or egress port."""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from kumo.agent.kernelflows import KernelFlows
from kumo.agent.push import PushRefused, ReplayGuard, StatePush, decode
from kumo.agent.view import HostView
from kumo.flowstate.local import LocalFlowState
from kumo.flowstate.redis import FlowStateUnavailable, RedisFlowState
from kumo.packet import int_to_ip
from kumo.simulation.result import SimulationResult, StateWrite


class Peers(NamedTuple):
    """The hosts a flow's new state goes to: those of its egress ports (its tunnelled packets reach them: the
    kernel there can record it from them), and the others (a stateful port group's: only a push does)."""

    egress: set[str]
    others: set[str]


NO_PEERS = Peers(set(), set())


@dataclass(eq=False)
class StateSharing:
    host_id: str
    view: HostView
    flows: KernelFlows
    flow_state: LocalFlowState | RedisFlowState
    counters: collections.Counter[str]
    push_key: Callable[[], bytes] = lambda: b""  # the cluster's push key (kumo.agent.pushkey)
    push: StatePush | None = field(default=None, init=False)  # (opened when the agent starts)
    _guard: ReplayGuard = field(default_factory=ReplayGuard, init=False)
    _pushes: dict[str, list[StateWrite]] = field(default_factory=dict, init=False)  # host -> this round's new state
    _round_stateful: set[bytes] = field(default_factory=set, init=False)  # this round's flows whose state goes first

    def open(self) -> None:
        self.push = StatePush()

    def close(self) -> None:
        if self.push is not None:
            self.push.close()

    def fileno(self) -> int:
        """What the packet thread polls for pushes from peers (-1: none)."""
        return self.push.fileno() if self.push is not None else -1

    def note(self, raw_key: bytes, port_id: str, result: SimulationResult) -> Peers | None:
        """A flow of this round wrote state: it is durable before the flow is installed, and pushed. Returns
        the hosts it is pushed to (None with a shared store: the state goes everywhere)."""
        self._round_stateful.add(raw_key)
        peers = self._push_targets(port_id, result)
        for host in peers.egress | peers.others:
            self._pushes.setdefault(host, []).extend(result.state_writes)
        return None if isinstance(self.flow_state, RedisFlowState) else peers

    def end_round(self) -> set[bytes]:
        """Make the round's new state durable (shared store) and push it to the peers that may see the
        return traffic. Returns the round's flows that must not be forwarded (the store did not take their
        state); they are no longer pending."""
        dropped: set[bytes] = set()
        try:
            self.flow_state.flush()
        except FlowStateUnavailable:
            dropped = self._fail_closed()
        self._round_stateful.clear()
        self._send_pushes()
        return dropped

    def _fail_closed(self) -> set[bytes]:
        dropped = set(self._round_stateful)
        self.flows.forget_pending(dropped)
        self.counters["drop.flow_state_unavailable"] += len(dropped)
        self._pushes.clear()
        return dropped

    def _push_targets(self, port_id: str, result: SimulationResult) -> Peers:
        stateful_hosts = self.view.stateful_hosts
        others = set(stateful_hosts.get(port_id, ()))
        egress_hosts = set()
        for egress in result.egress_port_ids:
            others |= stateful_hosts.get(egress, set())
            port = self.view.snapshot.ports.get(egress)
            if port is not None and port.get("host_id"):
                egress_hosts.add(port["host_id"])
        egress_hosts.discard(self.host_id)
        others -= egress_hosts | {self.host_id}
        return Peers(egress_hosts, others)

    def _send_pushes(self) -> None:
        pushes, self._pushes = self._pushes, {}
        if self.push is None:
            return
        for host, writes in pushes.items():
            remote = self.view.tunnel_peers.get(host)
            if remote is None:
                self.counters["push_no_tunnel"] += 1
                continue
            try:
                self.push.send(self.host_id, remote, writes, self.push_key())
                self.counters["state_pushed"] += len(writes)
            except OSError:
                self.counters["push_send_errors"] += 1

    def receive(self) -> None:
        """Fold in the state peers pushed: from tunnel peers only, under the cluster's key, once each."""
        assert self.push is not None
        peers = {int_to_ip(ip): host for host, ip in self.view.tunnel_peers.items()}
        key = self.push_key()
        for address, data in self.push.receive():
            if address not in peers:
                self.counters["push_from_stranger"] += 1
                continue
            try:
                pushed = decode(data, key)
                self._guard.check(pushed)
            except PushRefused as refused:
                self.counters[f"push_{refused.reason}"] += 1
                continue
            writes = pushed.writes
            for write in writes:
                self.flow_state.learn(write.kind, write.key, write.value)
                self.flows.invalidate((write.kind, write.key))  # results cached before this state existed
            self.counters["state_received"] += len(writes)
