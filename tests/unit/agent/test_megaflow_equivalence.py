"""A megaflow never forwards a packet differently from the simulation (a too wide one would be a firewall
bypass or a tenant leak).

Random topologies (the test cloud's bridges and router, random chains of random rules on random ports and
devices, static NAT, a port group) and random packet sequences go through a model of the datapath: the agent's
choice of exact flow or megaflow (kumo.agent.masks, the real MaskTable), installed keys as the agent makes them
(kumo.datapath.actions.flow_key, kumo.datapath.flowmaps.megaflow_key) and the kernel's lookup (the exact table,
then each mask in the program's order: the key ANDed with the mask, with the mask's id). A packet that finds a
flow must get what a fresh simulation gives it: the same verdict, egress ports, rewrites, TTL decrement and
path MTU, and no flow state the hit would fail to record. A packet that finds none is served as the agent
serves it: simulated, its learning and flow state applied (invalidating what depended on them), its flow
installed. (That the BPF program's masked lookup is this model's is tested against the kernel by
tests/integration/test_actions_in_the_kernel.py.)"""

from __future__ import annotations

import collections
import os
from typing import Any

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from kumo.agent.kernelflows import _without_conntrack_tags
from kumo.agent.learned import learn_tag, stale_by_own_learning, stale_by_own_state
from kumo.agent.masks import MaskTable
from kumo.datapath.actions import flow_key
from kumo.datapath.flowmaps import FLOW_KEY_SIZE, is_megaflow, mask_id_of, megaflow_key
from kumo.datapath.layout import CT_ESTABLISHED, CT_NEW, MAX_MASKS, FlowKey
from kumo.flowstate.local import LocalFlowState
from kumo.packet import ip_to_int
from kumo.packet.flowmatch import BIT, FlowMatch
from kumo.packet.frame import parse_frame
from kumo.simulation import SimulationResult, Verdict, simulate
from kumo.simulation.conntrack import forward_key, return_key
from kumo.simulation.view import snapshot_of
from tests.unit.simulation.conftest import VM1_MAC, VM2_MAC, VM3_MAC, Cloud, build_cloud, tcp_frame, udp_frame

PORTS = ("vm1", "vm2", "vm3", "uplink")
IFINDEX = {name: i + 10 for i, name in enumerate(PORTS)}
GATEWAY_MAC = "02:00:00:00:00:99"
ADDRESSES = ("10.0.1.11", "10.0.1.12", "10.0.2.13", "192.0.2.1", "203.0.113.5", "10.0.1.1", "10.0.2.1")
CIDRS = (None, "10.0.1.0/24", "10.0.1.11/32", "10.0.2.0/24", "192.0.2.0/24", "203.0.113.0/24")
L4_PORTS = (80, 443, 1000, 1001, 5555)
RANGES = (None, {"start": 80, "end": 80}, {"start": 1000, "end": 2000}, {"start": 1, "end": 100})
_TTL = BIT["ip_ttl"]


class FakeMaps:
    """What MaskTable writes to the kernel, kept for the model's lookups."""

    def __init__(self, megaflows: dict[bytes, SimulationResult]) -> None:
        self.masks: dict[int, int] = {}
        self.order: list[int] = []
        self._megaflows = megaflows

    def set_mask(self, mask_id: int, mask: int) -> None:
        self.masks[mask_id] = mask

    def set_mask_order(self, ids: list[int]) -> None:
        self.order = list(ids)

    def megaflows(self) -> list[tuple[bytes, None]]:
        return [(raw, None) for raw in self._megaflows]

    def remove(self, raw: bytes) -> bool:
        return self._megaflows.pop(raw, None) is not None

    def mask_hits(self) -> list[int]:
        return [0] * MAX_MASKS


class FakeDatapath:
    def __init__(self, maps: FakeMaps) -> None:
        self.maps = maps


class Kernel:
    """The exact table and the megaflows, with the agent's booking (tags) and the masks."""

    def __init__(self, state: LocalFlowState) -> None:
        self.state = state  # the kernel's conntrack answers: what the agent's flow state holds (LocalFlowState.kernel)
        self.exact: dict[bytes, SimulationResult] = {}
        self.mega: dict[bytes, SimulationResult | str] = {}  # a device's id: a first stage (query its zone)
        self.maps = FakeMaps(self.mega)
        self.masks = MaskTable(FakeDatapath(self.maps), collections.Counter(), max_per_port=4)  # type: ignore[arg-type]
        self.by_tag: dict[Any, set[bytes]] = collections.defaultdict(set)

    def lookup(self, raw: bytes, match: FlowMatch) -> SimulationResult | None:
        """As the program: the exact flow, else the megaflows; a first stage's query answered, then the
        megaflows again with the answer in the key; a hit that records, recorded."""
        hit = self.exact.get(raw) or self._mega(raw)
        if isinstance(hit, str):
            flow = (match.peek("ip_proto"), match.peek("ip_src"), match.peek("tp_src"), match.peek("ip_dst"))
            found = self.state.conntrack_has(return_key((*flow, match.peek("tp_dst")), hit))
            answered = bytearray(raw)
            answered[FlowKey.ct.offset] = CT_ESTABLISHED if found else CT_NEW
            hit = self._mega(bytes(answered))
            assert not isinstance(hit, str)
        if hit is not None and hit.conntrack is not None and hit.conntrack.record is not None:
            flow = (match.peek("ip_proto"), match.peek("ip_src"), match.peek("tp_src"), match.peek("ip_dst"))
            self.state.record("conntrack", forward_key((*flow, match.peek("tp_dst")), hit.conntrack.record))
        return hit

    def _mega(self, raw: bytes) -> SimulationResult | str | None:
        for mask_id in self.maps.order:
            hit = self.mega.get(megaflow_key(raw, self.maps.masks[mask_id], mask_id))
            if hit is not None:
                return hit
        return None

    def install(self, raw: bytes, result: SimulationResult) -> None:
        """As kumo.agent.kernelflows.KernelFlows.queue."""
        staged = self.masks.conntrack_keys(raw, result) if result.conntrack is not None else None
        if staged is not None:
            assert result.conntrack is not None
            result = _without_conntrack_tags(result)
            self._put(staged[0], result, result.conntrack.device if result.conntrack else "")
            self._put(staged[1], result, result)
            return
        key = raw if result.state_writes else self.masks.key_for(raw, result) or raw
        self._put(key, result, result)

    def _put(self, key: bytes, result: SimulationResult, entry: SimulationResult | str) -> None:
        self.remove(key)
        if is_megaflow(key):
            self.mega[key] = entry
        else:
            assert isinstance(entry, SimulationResult)
            self.exact[key] = entry
        self.masks.booked(key, result, key)
        for tag in result.tags:
            self.by_tag[tag].add(key)

    def remove(self, key: bytes) -> None:
        table = self.mega if is_megaflow(key) else self.exact
        if table.pop(key, None) is not None:
            self.masks.unbooked(key)

    def invalidate(self, tag: Any) -> None:
        for key in self.by_tag.pop(tag, set()):
            self.remove(key)


def outcome(result: SimulationResult) -> tuple[Any, ...]:
    return (
        result.verdict,
        sorted(result.egress_port_ids),
        sorted(result.rewrites.items()),
        result.ttl_decrement,
        result.path_mtu,
    )


rule_st = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["accept", "drop", "reject", "return", "jump", "dnat"]),
        "nw_proto": st.sampled_from([None, 6, 17]),
        "nw_src": st.sampled_from(CIDRS),
        "nw_dst": st.sampled_from(CIDRS),
        "tp_src": st.sampled_from(RANGES),
        "tp_dst": st.sampled_from(RANGES),
        "dl_src": st.sampled_from([None, VM1_MAC, VM3_MAC]),
        "conntrack": st.sampled_from([None, None, "match_forward_flow", "match_return_flow"]),
        "in_group": st.booleans(),
        "inv": st.booleans(),
        "inv_nw_dst": st.booleans(),
    }
)
chains_st = st.lists(st.lists(rule_st, min_size=1, max_size=4), min_size=1, max_size=3)
ATTACH_POINTS = ("vm1", "vm2", "vm3", "uplink", "web", "db", "rtr")
attach_st = st.lists(
    st.tuples(st.sampled_from(ATTACH_POINTS), st.sampled_from(["inbound_filter_id", "outbound_filter_id"])),
    min_size=1,
    max_size=4,
)
packet_st = st.tuples(
    st.sampled_from(PORTS),
    st.sampled_from([VM1_MAC, VM2_MAC, VM3_MAC, GATEWAY_MAC, "rtr-web", "rtr-db", "uplink", "ff:ff:ff:ff:ff:ff"]),
    st.sampled_from(ADDRESSES),
    st.sampled_from(ADDRESSES),
    st.sampled_from(["tcp", "udp"]),
    st.sampled_from(L4_PORTS),
    st.sampled_from(L4_PORTS),
)


def build(chains: list[list[dict[str, Any]]], attach: list[tuple[str, str]]) -> Cloud:
    cloud = build_cloud()
    topo = cloud.topo
    group = topo.create("port_groups", {"name": "g"})["id"]
    for member in ("vm1", "vm3"):
        topo.update("ports", cloud[member], {"port_group_ids": [group]})
    chain_ids = [topo.create("chains", {"name": f"c{i}"})["id"] for i in range(len(chains))]
    for i, rules in enumerate(chains):
        for spec in rules:
            rule: dict[str, Any] = {"chain_id": chain_ids[i], "type": spec["type"], "inv": spec["inv"]}
            for field in ("nw_proto", "nw_src", "nw_dst", "tp_src", "tp_dst", "dl_src"):
                if spec[field] is not None:
                    rule[field] = spec[field]
            if spec["nw_dst"] is not None:
                rule["inv_nw_dst"] = spec["inv_nw_dst"]
            if spec["conntrack"]:
                rule[spec["conntrack"]] = True
            if spec["in_group"]:
                rule["port_group_id"] = group
            if spec["type"] == "jump":
                if i + 1 >= len(chain_ids):
                    rule["type"] = "accept"
                else:
                    rule["jump_chain_id"] = chain_ids[i + 1]  # (forward only: no loops)
            if spec["type"] == "dnat":
                rule["nat_targets"] = [{"address_from": "10.0.2.13", "address_to": "10.0.2.13"}]
                rule["flow_action"] = "accept"
            topo.create("rules", rule)
    for n, (point, direction) in enumerate(attach):
        kind = "ports" if point in ("vm1", "vm2", "vm3", "uplink") else "routers" if point == "rtr" else "bridges"
        topo.update(kind, cloud[point], {direction: chain_ids[n % len(chain_ids)]})
    router = cloud["rtr"]
    for address, mac in (("10.0.1.11", VM1_MAC), ("10.0.1.12", VM2_MAC), ("10.0.2.13", VM3_MAC)):
        cloud.learned.arps[(router, ip_to_int(address))] = mac
    cloud.learned.arps[(router, ip_to_int("192.0.2.1"))] = GATEWAY_MAC
    return cloud


def frame_of(cloud: Cloud, packet: tuple[Any, ...]) -> bytes:
    port, dst_mac, src, dst, proto, sport, dport = packet
    src_mac = {"vm1": VM1_MAC, "vm2": VM2_MAC, "vm3": VM3_MAC, "uplink": GATEWAY_MAC}[port]
    if dst_mac in ("rtr-web", "rtr-db", "uplink"):
        dst_mac = cloud.obj("ports", dst_mac)["port_mac"]
    make = tcp_frame if proto == "tcp" else udp_frame
    return make(src_mac, dst_mac, src, dst, sport, dport)


def serve(cloud: Cloud, kernel: Kernel, frame: bytes, port: str, counts: collections.Counter[str]) -> None:
    match = parse_frame(frame, cloud[port])
    raw = bytes(flow_key(match, IFINDEX[port]))
    assert len(raw) == FLOW_KEY_SIZE
    snapshot = snapshot_of(cloud.topo.store)
    fresh = simulate(match, snapshot, cloud.learned, cloud.state, frame, trace=False)
    hit = kernel.lookup(raw, match)
    if hit is not None:
        counts["hit"] += 1
        assert outcome(hit) == outcome(fresh), (hit.describe(), fresh.describe())
        recorded = set(hit.state_writes)
        if hit.conntrack is not None and hit.conntrack.record is not None:  # (the kernel records it: above)
            recorded |= {w for w in fresh.state_writes if w.kind == "conntrack"}
            counts["kernel_conntrack_hit"] += 1
        assert set(fresh.state_writes) <= recorded, "a hit would not record this flow's state"
        return
    counts["miss"] += 1
    for write in fresh.learn_writes:  # as kumo.agent.serve: learned at once, dependent flows removed
        (cloud.learned.macs if write.kind == "mac" else cloud.learned.arps)[write.key] = write.value
        kernel.invalidate(learn_tag(write))
    if stale_by_own_learning(fresh):
        fresh = simulate(parse_frame(frame, cloud[port]), snapshot, cloud.learned, cloud.state, frame, trace=False)
    for write in fresh.state_writes:
        cloud.state.record(write.kind, write.key, write.value)
        kernel.invalidate((write.kind, write.key))
    if stale_by_own_state(fresh):
        fresh = simulate(parse_frame(frame, cloud[port]), snapshot, cloud.learned, cloud.state, frame, trace=False)
        for write in fresh.state_writes:
            cloud.state.record(write.kind, write.key, write.value)
            kernel.invalidate((write.kind, write.key))
    installable = fresh.verdict in (Verdict.OUTPUT, Verdict.FLOOD, Verdict.DROP)
    if installable and not (fresh.one_off or fresh.generated or fresh.match is None or fresh.match.mask & _TTL):
        kernel.install(raw, fresh)


@settings(
    max_examples=int(os.environ.get("KUMO_EXAMPLES", "500")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(chains=chains_st, attach=attach_st, packets=st.lists(packet_st, min_size=5, max_size=40))
def test_every_hit_gives_what_the_simulation_gives(
    chains: list[list[dict[str, Any]]], attach: list[tuple[str, str]], packets: list[tuple[Any, ...]]
) -> None:
    note(f"chains={chains!r}\nattach={attach!r}\npackets={packets!r}")
    cloud = build(chains, attach)
    try:
        kernel = Kernel(cloud.state)
        counts: collections.Counter[str] = collections.Counter()
        for packet in packets + packets:  # (the second time through, flows made the first time are hit)
            serve(cloud, kernel, frame_of(cloud, packet), packet[0], counts)
    finally:
        cloud.topo.store.close()


def test_the_model_hits_megaflows_for_new_connections_on_a_known_path() -> None:
    """The property above is not vacuous: on a plain routed path, new connections hit a megaflow."""
    cloud = build([[{**_ACCEPT}]], [("rtr", "inbound_filter_id")])
    try:
        kernel = Kernel(cloud.state)
        counts: collections.Counter[str] = collections.Counter()
        rmac = cloud.obj("ports", "rtr-web")["port_mac"]
        for sport in range(2000, 2010):
            serve(cloud, kernel, tcp_frame(VM1_MAC, rmac, "10.0.1.11", "10.0.2.13", sport, 80), "vm1", counts)
        assert counts == {"miss": 1, "hit": 9}
        assert kernel.mega and not kernel.exact
        assert all(is_megaflow(key) and mask_id_of(key) in kernel.maps.order for key in kernel.mega)
    finally:
        cloud.topo.store.close()


_ACCEPT = {
    "type": "accept",
    "nw_proto": 6,
    "nw_src": None,
    "nw_dst": "10.0.2.0/24",
    "tp_src": None,
    "tp_dst": {"start": 80, "end": 80},
    "dl_src": None,
    "conntrack": None,
    "in_group": False,
    "inv": False,
    "inv_nw_dst": False,
}


def test_the_model_leaves_a_firewalls_connection_tracking_to_the_kernel() -> None:
    """The property is not vacuous for stateful paths either: through a match_return_flow firewall on the
    server's port, new connections and their replies hit the two stages of conntrack megaflows, and the kernel
    records them; an unsolicited packet from the server is still dropped."""
    firewall = [
        {**_ACCEPT, "nw_proto": None, "nw_dst": None, "tp_dst": None, "conntrack": "match_return_flow"},
        {**_ACCEPT, "nw_dst": None, "nw_src": None, "tp_dst": {"start": 80, "end": 80}},
        {**_ACCEPT, "type": "drop", "nw_proto": None, "nw_dst": None, "tp_dst": None},
    ]
    cloud = build([firewall], [("vm3", "outbound_filter_id")])
    try:
        kernel = Kernel(cloud.state)
        counts: collections.Counter[str] = collections.Counter()
        to_rtr = cloud.obj("ports", "rtr-web")["port_mac"]
        from_rtr = cloud.obj("ports", "rtr-db")["port_mac"]
        for sport in range(3000, 3010):
            serve(cloud, kernel, tcp_frame(VM1_MAC, to_rtr, "10.0.1.11", "10.0.2.13", sport, 80), "vm1", counts)
            serve(cloud, kernel, tcp_frame(VM3_MAC, from_rtr, "10.0.2.13", "10.0.1.11", 80, sport), "vm3", counts)
            serve(cloud, kernel, tcp_frame(VM1_MAC, to_rtr, "10.0.1.11", "10.0.2.13", sport, 80), "vm1", counts)
        unsolicited = tcp_frame(VM1_MAC, to_rtr, "10.0.1.11", "10.0.2.13", 4000, 22)
        serve(cloud, kernel, unsolicited, "vm1", counts)
        assert counts["miss"] <= 6, counts
        assert counts["kernel_conntrack_hit"] >= 9, counts
    finally:
        cloud.topo.store.close()


def test_a_dropped_packet_records_no_connection_in_the_kernel() -> None:
    """(Found by the property above.) A packet a filter drops after its ingress device noted a record of it
    records nothing: its drop megaflow must not record either, or the next such packet, now a "reply" of
    itself (its reversed tuple is its own), would be let through where the simulation drops it."""
    accept_unless_new = {**_ACCEPT, "nw_proto": None, "conntrack": "match_forward_flow", "inv": True}
    accept_unless_new["nw_dst"] = "10.0.1.0/24"
    drop_unless = {**_ACCEPT, "type": "drop", "nw_proto": None, "nw_dst": None, "tp_dst": None, "inv": True}
    drop_unless.update(nw_src="10.0.1.0/24", tp_src={"start": 1000, "end": 2000})
    cloud = build([[accept_unless_new, drop_unless]], [("vm1", "inbound_filter_id")])
    try:
        kernel = Kernel(cloud.state)
        counts: collections.Counter[str] = collections.Counter()
        to_itself = tcp_frame(VM1_MAC, VM1_MAC, "10.0.1.11", "10.0.1.11", 80, 80)
        for _ in range(3):
            serve(cloud, kernel, to_itself, "vm1", counts)
        assert counts == {"miss": 1, "hit": 2} and not cloud.state.conntrack
    finally:
        cloud.topo.store.close()


def test_a_packet_that_is_its_own_reply_is_simulated_again_after_its_record() -> None:
    """(Found by the property above.) A packet whose reversed 5-tuple is its own, recorded as a forward flow,
    is a reply from then on: its flow is the answer for that, not the one simulated before the record."""
    forward = {**_ACCEPT, "nw_proto": None, "nw_dst": None, "tp_dst": None, "conntrack": "match_forward_flow"}
    replies_dropped = {**forward, "type": "drop", "inv": True}
    cloud = build([[forward, replies_dropped]], [("vm1", "inbound_filter_id")])
    try:
        kernel = Kernel(cloud.state)
        counts: collections.Counter[str] = collections.Counter()
        to_itself = tcp_frame(VM1_MAC, VM2_MAC, "10.0.1.11", "10.0.1.11", 80, 80)
        for _ in range(3):
            serve(cloud, kernel, to_itself, "vm1", counts)  # (the model asserts each hit)
        assert counts == {"miss": 1, "hit": 2} and cloud.state.conntrack
    finally:
        cloud.topo.store.close()
