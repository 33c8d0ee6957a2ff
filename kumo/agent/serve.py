"""Serving one upcall: the heart of a round.

An upcall is a packet the kernel found no flow for. It is served, in this order, by
  1. the key index: a result found again from the kernel's key bytes alone (no parsing);
  2. the wildcard table: a result found again from the parsed headers (the fields its simulation read);
  3. a simulation through the virtual topology (kumo.simulation), whose learned MAC/ARP entries and new flow
     state (conntrack, NAT) are recorded at once;
then its generated packets are sent, a packet waiting for ARP is parked, and any other result becomes a
kernel flow queued for the end of the round (kumo.agent.kernelflows), its new state noted for sharing
(kumo.agent.sharing). With shared flow state, a result that read a local miss is provisional: it is acted on
at the end of the round's serving (settle), once Redis has answered the round's misses together
(kumo.agent.provisional)."""

from __future__ import annotations

import collections
import ctypes
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kumo.agent.egress import Egress
from kumo.agent.generated import Emitter, Parking
from kumo.agent.kernelflows import KernelFlows
from kumo.agent.keyindex import KEY_SIZE, Indexed
from kumo.agent.learned import AgentLearned, arp_tag, mac_tag, stale_by_own_learning, stale_by_own_state
from kumo.agent.liveness import StoreLink
from kumo.agent.provisional import Packet, Provisional, ProvisionalResults
from kumo.agent.sharing import NO_PEERS, Peers, StateSharing
from kumo.agent.view import HostView
from kumo.datapath.actions import flow_key
from kumo.datapath.layout import UPCALL_HEAD, UPCALL_INJECT_MISS, UPCALL_MISS, FlowKey, UpcallHeader
from kumo.flowstate.local import LocalFlowState
from kumo.flowstate.redis import RedisFlowState
from kumo.packet import PacketError, int_to_ip
from kumo.packet.flowmatch import BIT, FlowMatch
from kumo.packet.frame import parse_frame
from kumo.simulation import simulate
from kumo.simulation.result import LearnWrite, SimulationResult, StateWrite, Verdict
from kumo.topology.state import ARP_TABLE, MAC_TABLE, arp_key, mac_key

log = logging.getLogger("kumo.agent")

_HEADER = ctypes.sizeof(UpcallHeader)
_KEY_AT = UpcallHeader.key.offset
_CT_AT = FlowKey.ct.offset
_TTL = BIT["ip_ttl"]


@dataclass(eq=False)
class UpcallServer:
    host_id: str
    view: HostView
    flows: KernelFlows
    egress: Egress
    emitter: Emitter
    parking: Parking
    sharing: StateSharing
    learned: AgentLearned
    flow_state: LocalFlowState | RedisFlowState
    store_link: StoreLink
    counters: collections.Counter[str]
    port_upcalls: collections.Counter[str] = field(default_factory=collections.Counter)  # port id -> upcalls
    provisional: ProvisionalResults | None = field(default=None, init=False)  # (with shared flow state)

    def __post_init__(self) -> None:
        self.provisional = (
            ProvisionalResults(self.flow_state, self.flows, self.counters)
            if isinstance(self.flow_state, RedisFlowState)
            else None
        )

    def serve_all(self, upcalls: list[bytes]) -> None:
        """Serve a round's upcalls; settle() ends the round's serving."""
        if self.provisional is not None:
            self.provisional.begin_round()
        for raw in upcalls:
            self._guarded(self.serve, raw)

    def settle(self) -> None:
        """The round's provisional results (kumo.agent.provisional): acted on, or their packets served again."""
        if self.provisional is None:
            return
        try:
            standing, again = self.provisional.settle()
            for one in standing:
                self._guarded(self._stand, one)
            for packet in again:
                self._guarded(self.process, *packet)
        finally:
            self.provisional.end_round()

    def _stand(self, one: Provisional) -> None:
        self.flows.wildcard.insert(one.result)
        self.act(one.packet, one.match, one.result)

    def _guarded(self, serve: Callable[..., None], *args: Any) -> None:
        try:
            serve(*args)
        except Exception:  # this packet is lost (and counted); the rest of the round is served
            self.counters["agent_errors"] += 1
            log.exception("serving an upcall")

    def serve(self, raw: bytes) -> None:
        self.counters["upcalls"] += 1
        in_port, length, cap_len, reason, queued_ns = UPCALL_HEAD.unpack_from(raw)
        if reason == UPCALL_INJECT_MISS:
            self.counters["inject_miss"] += 1
            return
        port_id = self.view.port_of_ifindex.get(in_port)
        if port_id is None:
            self.counters["drop.unbound_interface"] += 1
            return
        self.port_upcalls[port_id] += 1
        key = raw[_KEY_AT : _KEY_AT + KEY_SIZE]
        if key[_CT_AT]:  # (a second lookup's miss: the flows the agent installs are keyed as parsed)
            key = key[:_CT_AT] + b"\0" + key[_CT_AT + 1 :]
        frame = raw[_HEADER : _HEADER + cap_len]
        truncated = length > cap_len
        flows = self.flows
        if reason == UPCALL_MISS and (hit := flows.by_key.lookup(key)) is not None:
            if flows.wildcard.holds(hit.result):
                self.counters["wildcard_hits"] += 1
                self.counters["key_index_hits"] += 1
                if hit.drop_counter is not None:
                    self.counters[hit.drop_counter] += 1
                flows.queue(key, hit.result, hit.value, hit.reinject, frame, in_port, queued_ns, truncated)
                return
            flows.by_key.discard(hit)  # invalidated since: the full path finds what holds now
        self.process(frame, in_port, port_id, truncated, reason, queued_ns=queued_ns, kernel_key=key)

    def process(
        self,
        frame: bytes,
        ifindex: int,
        port_id: str,
        truncated: bool,
        reason: int,
        queued_ns: int = 0,
        kernel_key: bytes | None = None,
    ) -> None:
        """Serve one packet. `kernel_key`: the key the kernel looked up (an upcall's); the flow is installed
        under it, which saves computing it again from the parsed frame on the first-packet path."""
        try:
            match = parse_frame(frame, port_id)
        except PacketError:
            self.counters["drop.malformed"] += 1
            return
        packet = Packet(frame, ifindex, port_id, truncated, reason, queued_ns, kernel_key)
        result = self.flows.wildcard.lookup(match) if reason == UPCALL_MISS else None
        if result is None:
            result = self._simulate(match, frame)
            self.learn(result.learn_writes)
            if stale_by_own_learning(result):  # (what it read changed with what it learned: once more)
                result = self._simulate(match, frame)
            recorded = list(result.state_writes)
            self.record_state(result.state_writes)
            if stale_by_own_state(result):  # (what it read changed with what it recorded: once more)
                result = self._simulate(match, frame)
                recorded += result.state_writes
                self.record_state(result.state_writes)
            unconfirmed = self.flow_state.take_unconfirmed()
            if unconfirmed and self.provisional is not None:  # acted on once Redis has answered
                self.provisional.hold(Provisional(packet, match, result, recorded, unconfirmed))
                return
            self.flows.wildcard.insert(result)
        else:
            self.counters["wildcard_hits"] += 1
        self.act(packet, match, result)

    def act(self, packet: Packet, match: FlowMatch, result: SimulationResult) -> None:
        """What a packet's result does: its generated packets sent, the packet parked, or its flow queued."""
        frame, ifindex, port_id, truncated, _, queued_ns, kernel_key = packet
        flows = self.flows
        for generated in result.generated:
            self.emitter.emit(generated)
        if result.verdict is Verdict.PARK and result.park_until is not None:
            self.parking.park(result.park_until, frame, ifindex, port_id)
            return
        drop_counter = f"drop.{result.reason.value}" if result.verdict is Verdict.DROP else None
        if drop_counter is not None:
            self.counters[drop_counter] += 1
        if result.verdict not in (Verdict.OUTPUT, Verdict.FLOOD, Verdict.DROP):
            return
        if result.one_off or result.generated or match.seen & _TTL:
            return  # about this packet only: its TTL, or a quote, decided it (the kernel key has neither)
        outputs = self.egress.outputs(result)
        raw_key = kernel_key if kernel_key is not None else bytes(flow_key(match, ifindex))
        value = flows.values.value_of(result, outputs)
        peers: Peers | None = NO_PEERS
        if result.state_writes:
            peers = self.sharing.note(raw_key, port_id, result)
        elif kernel_key is not None and flows.wildcard.holds(result):  # the next such packet: found by its key
            flows.by_key.add(kernel_key, Indexed(result, value, bool(outputs), drop_counter))
        # the kernel may track its connection unless a push must reach hosts its packets do not (or Redis)
        at_egress = None if peers is None or peers.others else bool(peers.egress)
        flows.queue(raw_key, result, value, bool(outputs), frame, ifindex, queued_ns, truncated, at_egress)

    def _simulate(self, match: FlowMatch, frame: bytes) -> SimulationResult:
        self.counters["simulations"] += 1
        return simulate(match, self.view.snapshot, self.learned, self.flow_state, frame=frame, trace=False)

    def learn(self, writes: list[LearnWrite]) -> None:
        """MAC and ARP entries the simulation learned: seen at once here, written to the store behind."""
        for write in writes:
            if write.kind == "mac":
                bridge, mac, vlan = write.key
                self.learned.macs[(bridge, mac, vlan)] = write.value
                self.flows.invalidate(mac_tag(bridge, mac, vlan))
                entry = {"port_id": write.value, "host_id": self.host_id}
                self.store_link.put_state(MAC_TABLE, mac_key(bridge, mac, vlan), entry)
            else:
                router, ip = write.key
                self.learned.arps[(router, ip)] = write.value
                self.flows.invalidate(arp_tag(router, ip))
                ip_text = int_to_ip(ip)
                entry = {"mac": write.value, "host_id": self.host_id}
                self.store_link.put_state(ARP_TABLE, arp_key(router, ip_text), entry)
                self.resume(("arp", router, ip_text))

    def record_state(self, writes: list[StateWrite]) -> None:
        for write in writes:
            self.flow_state.record(write.kind, write.key, write.value)
            self.flows.invalidate((write.kind, write.key))  # results cached before this state existed

    def resume(self, event: tuple[str, ...]) -> None:
        """Serve again the packets parked for `event` (e.g. the ARP resolution of their next hop)."""
        for _, frame, ifindex, port_id in self.parking.take(event):
            self.counters["resumed"] += 1
            self.process(frame, ifindex, port_id, truncated=False, reason=UPCALL_MISS)
