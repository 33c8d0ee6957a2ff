from __future__ import annotations

from typing import Any

from kumo.packet import ip_to_int
from kumo.packet.ethernet import ETH_P_IP, Ethernet
from kumo.packet.ipv4 import FLAG_MF, PROTO_UDP, IPv4
from kumo.simulation import Reason, Verdict
from tests.unit.simulation.conftest import VM1_MAC, VM2_MAC, Cloud, tcp_frame


def chain(cloud: Cloud, *rules: dict[str, Any]) -> str:
    chain_id = cloud.topo.create("chains", {})["id"]
    for rule in rules:
        cloud.topo.create("rules", {"chain_id": chain_id, **rule})
    return str(chain_id)


def to_vm2(cloud: Cloud, dport: int = 80, src: str = "10.0.1.11", sport: int = 1000) -> Any:
    cloud.learned.macs[(cloud["web"], VM2_MAC, None)] = cloud["vm2"]
    return cloud.send("vm1", tcp_frame(VM1_MAC, VM2_MAC, src, "10.0.1.12", sport, dport))


def test_drop_rule_on_tcp_80_and_the_flow_holds_tp_dst(cloud: Cloud) -> None:
    fw = chain(cloud, {"type": "drop", "nw_proto": 6, "tp_dst": {"start": 80, "end": 80}})
    cloud.topo.update("ports", cloud["vm2"], {"outbound_filter_id": fw})
    dropped = to_vm2(cloud, 80)
    assert (dropped.verdict, dropped.reason) == (Verdict.DROP, Reason.CHAIN_DROP)
    step = next(s for s in dropped.trace if s.rule_id)
    assert (step.stage, step.chain_id, step.device_id) == ("port.outbound_filter", fw, cloud["vm2"])
    passed = to_vm2(cloud, 81)
    assert passed.verdict is Verdict.OUTPUT
    assert {"tp_dst", "ip_proto"} <= set(passed.match.fields())
    assert "ip_src" not in passed.match.fields()


def test_jump_return_and_the_visited_chain_guard(cloud: Cloud) -> None:
    inner = chain(cloud, {"type": "return", "nw_src": "10.0.1.0/28"}, {"type": "drop"})
    outer = chain(cloud, {"type": "jump", "jump_chain_id": inner}, {"type": "accept"})
    cloud.topo.update("ports", cloud["vm1"], {"inbound_filter_id": outer})
    assert to_vm2(cloud, src="10.0.1.11").verdict is Verdict.OUTPUT  # returned, then accepted
    assert to_vm2(cloud, src="10.0.1.200").reason is Reason.CHAIN_DROP
    looping = chain(cloud)
    cloud.topo.create("rules", {"chain_id": looping, "type": "jump", "jump_chain_id": outer})
    cloud.topo.create("rules", {"chain_id": inner, "type": "jump", "jump_chain_id": looping, "position": 1})
    assert to_vm2(cloud).reason is Reason.CHAIN_LOOP


def test_conditions_inversion_groups_and_masks(cloud: Cloud) -> None:
    admins = cloud.topo.create("ip_addr_groups", {"addresses": ["10.0.1.11"]})["id"]
    group = cloud.topo.create("port_groups", {})["id"]
    cloud.topo.update("ports", cloud["vm1"], {"port_group_ids": [group]})
    cases: list[tuple[dict[str, Any], bool]] = [
        ({"ip_addr_group_src": admins}, True),
        ({"ip_addr_group_src": admins, "inv_ip_addr_group_src": True}, False),
        ({"port_group_id": group}, True),
        ({"in_port_ids": [cloud["vm2"]]}, False),
        ({"in_port_ids": [cloud["vm2"]], "inv_in_ports": True}, True),
        ({"dl_src": "02:00:00:00:00:ff", "dl_src_mask": "ff:ff:ff:ff:ff:00"}, True),
        ({"dl_dst": VM1_MAC}, False),
        ({"dl_type": 0x0800, "nw_dst": "10.0.1.0/24", "tp_src": {"start": 1000, "end": 2000}}, True),
        ({"nw_dst": "10.0.1.0/24", "inv": True}, False),
        ({"traversed_device": cloud["web"]}, True),
        ({"traversed_device": cloud["rtr"]}, False),
    ]
    for condition, drops in cases:
        fw = chain(cloud, {"type": "drop", **condition})
        cloud.topo.update("ports", cloud["vm2"], {"outbound_filter_id": fw})
        assert (to_vm2(cloud).verdict is Verdict.DROP) == drops, condition


def test_fragment_policy(cloud: Cloud) -> None:
    cloud.learned.macs[(cloud["web"], VM2_MAC, None)] = cloud["vm2"]
    a, b = ip_to_int("10.0.1.11"), ip_to_int("10.0.1.12")
    later = Ethernet(VM2_MAC, VM1_MAC, ETH_P_IP, IPv4(a, b, PROTO_UDP, b"x" * 16, flags_offset=FLAG_MF | 5).build())
    fw = chain(cloud, {"type": "drop", "nw_proto": 17, "tp_dst": {"start": 53, "end": 53}})
    cloud.topo.update("ports", cloud["vm2"], {"outbound_filter_id": fw})
    assert cloud.send("vm1", later.build()).verdict is Verdict.OUTPUT  # an L4 rule never sees later fragments
    fw = chain(cloud, {"type": "drop", "fragment_policy": "nonheader"})
    cloud.topo.update("ports", cloud["vm2"], {"outbound_filter_id": fw})
    assert cloud.send("vm1", later.build()).reason is Reason.CHAIN_DROP
    assert to_vm2(cloud).verdict is Verdict.OUTPUT


def test_reject_and_device_filters(cloud: Cloud) -> None:
    fw = chain(cloud, {"type": "reject", "nw_proto": 6})
    cloud.topo.update("bridges", cloud["web"], {"inbound_filter_id": fw})
    result = to_vm2(cloud)
    assert (result.verdict, result.reason) == (Verdict.DROP, Reason.CHAIN_REJECT)
    assert any(s.stage == "bridge.inbound_filter" for s in result.trace)


def test_return_flows_are_admitted_and_new_inbound_connections_are_not(cloud: Cloud) -> None:
    stateful = chain(cloud, {"type": "accept", "match_return_flow": True}, {"type": "drop"})
    cloud.topo.update("ports", cloud["vm1"], {"outbound_filter_id": stateful})
    cloud.learned.macs[(cloud["web"], VM1_MAC, None)] = cloud["vm1"]
    out = to_vm2(cloud, 22, sport=4242)  # vm1 opens a connection: recorded on the way out
    assert out.verdict is Verdict.OUTPUT and [w.kind for w in out.state_writes] == ["conntrack"]
    assert {"ip_src", "ip_dst", "tp_src", "tp_dst", "ip_proto"} <= set(out.match.fields())
    reply = cloud.send("vm2", tcp_frame(VM2_MAC, VM1_MAC, "10.0.1.12", "10.0.1.11", 22, 4242))
    assert reply.verdict is Verdict.OUTPUT and reply.state_writes == []  # a reply is not a new forward flow
    unsolicited = cloud.send("vm2", tcp_frame(VM2_MAC, VM1_MAC, "10.0.1.12", "10.0.1.11", 5555, 22))
    assert (unsolicited.verdict, unsolicited.reason) == (Verdict.DROP, Reason.CHAIN_DROP)


def test_return_flows_are_recognised_in_the_ingress_ports_own_inbound_filter(cloud: Cloud) -> None:
    """The ingress port's inbound filter runs before its device is crossed: conntrack looks at the device being
    entered (the simulation used to fail there on an empty list of traversed devices)."""
    stateful = chain(cloud, {"type": "accept", "match_return_flow": True}, {"type": "drop", "nw_proto": 6})
    cloud.topo.update("ports", cloud["vm2"], {"inbound_filter_id": stateful})  # what vm2 sends
    cloud.learned.macs[(cloud["web"], VM1_MAC, None)] = cloud["vm1"]
    cloud.learned.macs[(cloud["web"], VM2_MAC, None)] = cloud["vm2"]
    unsolicited = cloud.send("vm2", tcp_frame(VM2_MAC, VM1_MAC, "10.0.1.12", "10.0.1.11", 22, 4242))
    assert (unsolicited.verdict, unsolicited.reason) == (Verdict.DROP, Reason.CHAIN_DROP)
    assert to_vm2(cloud, 22, sport=4242).verdict is Verdict.OUTPUT  # vm1 opens: recorded at web
    reply = cloud.send("vm2", tcp_frame(VM2_MAC, VM1_MAC, "10.0.1.12", "10.0.1.11", 22, 4242))
    assert reply.verdict is Verdict.OUTPUT
