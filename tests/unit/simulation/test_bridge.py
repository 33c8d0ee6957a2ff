from __future__ import annotations

from kumo.packet import ip_to_int
from kumo.packet.arp import REPLY, Arp
from kumo.packet.ethernet import Ethernet
from kumo.simulation import Reason, Verdict
from tests.unit.simulation.conftest import VM1_MAC, VM2_MAC, Cloud, arp_request, tcp_frame


def test_unknown_unicast_floods_to_exterior_ports_except_ingress(cloud: Cloud) -> None:
    result = cloud.send("vm1", tcp_frame(VM1_MAC, VM2_MAC, "10.0.1.11", "10.0.1.12", 1000, 80))
    assert (result.verdict, result.reason) == (Verdict.FLOOD, Reason.FLOODED)
    assert cloud.names(result.egress_port_ids) == ["vm2"]  # not vm1 (ingress), not web-up (interior)
    assert [s.stage for s in result.trace][-2:] == ["bridge.forward", "port.deliver"]


def test_mac_learning_turns_floods_into_unicast(cloud: Cloud) -> None:
    cloud.send("vm1", tcp_frame(VM1_MAC, VM2_MAC, "10.0.1.11", "10.0.1.12", 1000, 80))
    back = cloud.send("vm2", tcp_frame(VM2_MAC, VM1_MAC, "10.0.1.12", "10.0.1.11", 80, 1000))
    assert (back.verdict, cloud.names(back.egress_port_ids)) == (Verdict.OUTPUT, ["vm1"])
    assert f"mac:{cloud['web']}/{VM1_MAC}/None" in back.tags  # a MAC move invalidates this flow


def test_an_l2_flow_holds_no_l3_or_l4_fields(cloud: Cloud) -> None:
    cloud.learned.macs[(cloud["web"], VM2_MAC, None)] = cloud["vm2"]
    result = cloud.send("vm1", tcp_frame(VM1_MAC, VM2_MAC, "10.0.1.11", "10.0.1.12", 1000, 80))
    assert set(result.match.fields()) <= {"in_port", "eth_src", "eth_dst", "eth_type", "vlan"}
    assert result.rewrites == {} and result.ttl_decrement == 0


def test_multicast_source_is_dropped(cloud: Cloud) -> None:
    result = cloud.send("vm1", tcp_frame("01:00:5e:00:00:01", VM2_MAC, "10.0.1.11", "10.0.1.12", 1, 2))
    assert (result.verdict, result.reason) == (Verdict.DROP, Reason.MULTICAST_SOURCE_MAC)


def test_arp_for_the_router_is_answered_by_the_bridge(cloud: Cloud) -> None:
    result = cloud.send("vm1", arp_request(VM1_MAC, "10.0.1.11", "10.0.1.1"))
    assert (result.verdict, result.reason) == (Verdict.REPLY, Reason.ARP_SUPPRESSED)
    (generated,) = result.generated
    arp = Arp.parse(Ethernet.parse(generated.frame).payload)
    assert (arp.op, arp.spa, arp.sha, arp.tpa) == (
        REPLY,
        ip_to_int("10.0.1.1"),
        cloud.obj("ports", "rtr-web")["port_mac"],
        ip_to_int("10.0.1.11"),
    )
    assert generated.port_id == cloud["vm1"]


def test_isolated_bridges_do_not_reach_each_other(cloud: Cloud) -> None:
    cloud.learned.macs[(cloud["db"], VM1_MAC, None)] = cloud["vm3"]  # even a MAC known on the other bridge
    result = cloud.send("vm1", tcp_frame(VM1_MAC, VM1_MAC.replace("01", "09"), "10.0.1.11", "10.0.2.13", 1, 2))
    assert cloud["vm3"] not in result.egress_port_ids


def test_vlan_tag_is_pushed_and_popped_across_a_tagged_bridge_link(cloud: Cloud) -> None:
    trunk = cloud.topo.create("bridges", {"name": "trunk"})["id"]
    tagged = cloud.topo.create("ports", {"device_id": trunk, "vlan_id": 100})["id"]
    cloud.topo.link(tagged, cloud.topo.create("ports", {"device_id": cloud["web"]})["id"])
    uplink = cloud.topo.bind(cloud.topo.create("ports", {"device_id": trunk})["id"], "host-1", "trunk0")["id"]
    cloud.ids["trunk-up"] = uplink
    out = cloud.send("vm1", tcp_frame(VM1_MAC, "02:00:00:00:00:77", "10.0.1.11", "10.0.1.99", 1, 2))
    assert "trunk-up" in cloud.names(out.egress_port_ids)
    assert out.rewrites.get("vlan") == 100  # tagged on the way through the VLAN-aware bridge
    back = cloud.send("trunk-up", tcp_frame("02:00:00:00:00:77", VM1_MAC, "10.0.1.99", "10.0.1.11", 2, 1, vlan=100))
    assert cloud.names(back.egress_port_ids) == ["vm1"] and back.rewrites == {"vlan": None}  # popped again
    other_vlan = cloud.send(
        "trunk-up", tcp_frame("02:00:00:00:00:78", VM1_MAC, "10.0.1.98", "10.0.1.11", 2, 1, vlan=200)
    )
    assert "vm1" not in cloud.names(other_vlan.egress_port_ids)
