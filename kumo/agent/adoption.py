"""Restart adoption: the kernel flows an earlier agent left behind (they kept forwarding while it was down)
are re-simulated on the current topology to learn why they exist. Those that still give the same actions are
kept, their packets never stopped; others are replaced by the current answer, or removed. A megaflow is
simulated from the fields of its mask alone, and kept only if the simulation read no other.

The learned tables the earlier agent used may be gone with its session; the kernel flows carry what it
learned, so it is learned back from them first: a flow entering a bridge port says where its source MAC
lives, and a routed flow's destination MAC is its next hop's ARP entry."""

from __future__ import annotations

import collections
import ctypes

from kumo.agent.egress import Egress
from kumo.agent.flows import KernelFlow
from kumo.agent.kernelflows import KernelFlows
from kumo.agent.masks import megaflow_mask
from kumo.agent.serve import UpcallServer
from kumo.agent.view import HostView
from kumo.datapath.actions import match_fields
from kumo.datapath.datapath import Datapath
from kumo.datapath.flowmaps import FLOW_KEY_SIZE, is_megaflow, mask_id_of, masked_fields
from kumo.datapath.layout import LINK_PORT, Action, FlowActions, FlowKey
from kumo.packet import ip_to_int, is_multicast_mac
from kumo.packet.flowmatch import FlowMatch
from kumo.simulation import simulate
from kumo.simulation.result import LearnWrite, SimulationResult, Verdict


def adopt_flows(
    datapath: Datapath,
    view: HostView,
    flows: KernelFlows,
    server: UpcallServer,
    egress: Egress,
    counters: collections.Counter[str],
) -> None:
    if not datapath.adopted:
        return
    flows.masks.adopt()
    adopted, old_links = [], []
    exact = [(key, bytes(key), value) for key, value in datapath.flows()]
    mega = [(FlowKey.from_buffer_copy(raw), raw, value) for raw, value in datapath.maps.megaflows()]
    for key, raw, value in exact + mega:
        if key.in_port == LINK_PORT:  # an earlier agent's flood links: the flows that name them are
            old_links.append(key)  # replaced by ones naming this agent's own, then they go
            flows.values.next_link_set = max(flows.values.next_link_set, key.ip_src + 1)
            continue
        port_id = view.port_of_ifindex.get(key.in_port)
        if port_id is None or (is_megaflow(raw) and flows.masks.mask_of(mask_id_of(raw)) is None):
            datapath.remove(raw)
            counters["adopt_removed"] += 1
            continue
        match = match_of_key(key, port_id)
        port = view.snapshot.ports.get(port_id)
        src = match.peek("eth_src")
        learns_source = not is_megaflow(raw) or "eth_src" in masked_fields(flows.masks.mask_of(mask_id_of(raw)) or 0)
        if port is not None and port["type"] == "bridge" and not is_multicast_mac(src) and learns_source:
            server.learn([LearnWrite("mac", (port["device_id"], src, match.peek("vlan")), port_id)])
        adopted.append((key, raw, value, port_id))
    for key, raw, value, port_id in adopted:
        result = _simulate(key, port_id, view, server)
        if result.verdict is Verdict.PARK and result.park_until and value.act.flags & Action.SET_ETH_DST:
            _, router, ip = result.park_until
            mac = ":".join(f"{b:02x}" for b in bytes(value.act.eth_dst))
            server.learn([LearnWrite("arp", (router, ip_to_int(ip)), mac)])
            result = _simulate(key, port_id, view, server)
        if not _still_holds(raw, result, flows):
            datapath.remove(raw)
            counters["adopt_removed"] += 1
            continue
        server.record_state(result.state_writes)
        flows.wildcard.insert(result)
        fresh = flows.values.value_of(result, egress.outputs(result))
        if fresh[: ctypes.sizeof(FlowActions)] != bytes(value.act):
            datapath.install(raw, fresh)
            counters["adopt_replaced"] += 1
        else:
            counters["adopt_kept"] += 1
        flow = KernelFlow(raw, result, stateful=bool(result.state_writes))
        flows.book.add(flow, flows.next_look(flow, flow.created))
        flows.values.note_flow(flow.key, fresh)
    for key in old_links:
        datapath.remove(key)


def _still_holds(raw: bytes, result: SimulationResult, flows: KernelFlows) -> bool:
    """Whether `result`, simulated again for kernel flow `raw`, may be installed under it. A megaflow's key
    holds only the fields of its mask (zeros elsewhere): it stays only if the simulation read no other field,
    so that the result holds for every packet the megaflow matches."""
    if result.verdict not in (Verdict.OUTPUT, Verdict.FLOOD, Verdict.DROP) or result.generated:
        return False
    if not is_megaflow(raw):
        return True
    mask = flows.masks.mask_of(mask_id_of(raw))
    needed = megaflow_mask(raw[:FLOW_KEY_SIZE], result)
    return mask is not None and needed is not None and needed & ~mask == 0


def _simulate(key: FlowKey, port_id: str, view: HostView, server: UpcallServer) -> SimulationResult:
    return simulate(match_of_key(key, port_id), view.snapshot, server.learned, server.flow_state, trace=False)


def match_of_key(key: FlowKey, port_id: str) -> FlowMatch:
    """The FlowMatch of a kernel key: the fields the kernel keys on, a TTL that decides nothing."""
    fields = match_fields(key)
    return FlowMatch(in_port=port_id, ip_ttl=64 if key.eth_type == 0x0800 else None, **fields)
