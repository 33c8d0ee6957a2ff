from __future__ import annotations

from typing import Any

from kumo.packet import int_to_ip, ip_to_int
from kumo.packet.ethernet import ETH_P_IP, Ethernet
from kumo.packet.icmp import Icmp
from kumo.packet.ipv4 import PROTO_ICMP, IPv4
from kumo.simulation import Reason, SimulationResult, Verdict
from tests.unit.simulation.conftest import VM1_MAC, VM2_MAC, VM3_MAC, Cloud, ping_frame, tcp_frame, udp_frame

EXT_MAC = "02:00:00:00:00:e1"
ONE_TO_ONE = {"address_from": "192.0.2.10", "address_to": "192.0.2.10"}


def rule(cloud: Cloud, chain: str, **fields: Any) -> None:
    cloud.topo.create("rules", {"chain_id": chain, **fields})


def nat_chains(cloud: Cloud) -> tuple[str, str]:
    pre, post = cloud.topo.create("chains", {})["id"], cloud.topo.create("chains", {})["id"]
    cloud.topo.update("routers", cloud["rtr"], {"inbound_filter_id": pre, "outbound_filter_id": post})
    return pre, post


def known_neighbours(cloud: Cloud) -> None:
    r = cloud["rtr"]
    for ip, mac in (
        ("192.0.2.1", EXT_MAC),
        ("10.0.1.11", VM1_MAC),
        ("10.0.1.12", VM2_MAC),
        ("10.0.2.13", VM3_MAC),
        ("10.0.2.14", "02:00:00:00:00:04"),
    ):
        cloud.learned.arps[(r, ip_to_int(ip))] = mac
    for bridge, mac, port in (("web", VM1_MAC, "vm1"), ("web", VM2_MAC, "vm2"), ("db", VM3_MAC, "vm3")):
        cloud.learned.macs[(cloud[bridge], mac, None)] = cloud[port]


def rmac(cloud: Cloud, port: str) -> str:
    return str(cloud.obj("ports", port)["port_mac"])


def shown(result: SimulationResult) -> dict[str, Any]:
    return {
        k: int_to_ip(v) if k.startswith("ip_") else v
        for k, v in result.rewrites.items()
        if k.startswith(("ip_", "tp_", "icmp"))
    }


def test_floating_ip_both_ways(cloud: Cloud) -> None:
    known_neighbours(cloud)
    pre, post = nat_chains(cloud)
    rule(
        cloud,
        pre,
        type="dnat",
        nw_dst="192.0.2.10/32",
        nat_targets=[{"address_from": "10.0.1.11", "address_to": "10.0.1.11"}],
    )
    rule(cloud, pre, type="rev_snat")
    rule(cloud, post, type="snat", nw_src="10.0.1.11/32", out_port_ids=[cloud["uplink"]], nat_targets=[ONE_TO_ONE])
    rule(cloud, post, type="rev_dnat")
    inbound = cloud.send("uplink", tcp_frame(EXT_MAC, rmac(cloud, "uplink"), "198.51.100.7", "192.0.2.10", 5000, 22))
    assert (inbound.verdict, cloud.names(inbound.egress_port_ids)) == (Verdict.OUTPUT, ["vm1"])
    assert shown(inbound) == {"ip_dst": "10.0.1.11"}
    assert any("dnat: rewrite ip_dst=10.0.1.11" in s.what for s in inbound.trace)
    reply = cloud.send("vm1", tcp_frame(VM1_MAC, rmac(cloud, "rtr-web"), "10.0.1.11", "198.51.100.7", 22, 5000))
    assert cloud.names(reply.egress_port_ids) == ["uplink"]
    assert shown(reply) == {"ip_src": "192.0.2.10"}  # rev_dnat restored the floating IP
    outbound = cloud.send("vm1", tcp_frame(VM1_MAC, rmac(cloud, "rtr-web"), "10.0.1.11", "198.51.100.9", 4000, 443))
    assert shown(outbound) == {"ip_src": "192.0.2.10"}  # static SNAT keeps the port
    back = cloud.send("uplink", tcp_frame(EXT_MAC, rmac(cloud, "uplink"), "198.51.100.9", "192.0.2.10", 443, 4000))
    assert shown(back) == {"ip_dst": "10.0.1.11"} and cloud.names(back.egress_port_ids) == ["vm1"]


def uplink_snat(cloud: Cloud, port_from: int, port_to: int) -> str:
    """SNAT to 192.0.2.2:port_from-port_to for traffic leaving by the uplink; returns the pre-routing chain."""
    known_neighbours(cloud)
    pre, post = nat_chains(cloud)
    target = {"address_from": "192.0.2.2", "address_to": "192.0.2.2", "port_from": port_from, "port_to": port_to}
    rule(cloud, post, type="snat", out_port_ids=[cloud["uplink"]], nat_targets=[target])
    return pre


def test_dynamic_snat_gives_each_flow_its_own_port_and_reverses_replies(cloud: Cloud) -> None:
    pre = uplink_snat(cloud, 20000, 20099)
    rule(cloud, pre, type="rev_snat", in_port_ids=[cloud["uplink"]])
    flows = [
        ("vm1", VM1_MAC, "rtr-web", "10.0.1.11"),
        ("vm2", VM2_MAC, "rtr-web", "10.0.1.12"),
        ("vm3", VM3_MAC, "rtr-db", "10.0.2.13"),
    ]
    seen = set()
    for port, mac, gw, ip in flows:
        result = cloud.send(port, tcp_frame(mac, rmac(cloud, gw), ip, "198.51.100.7", 3333, 80))
        src, sport = result.rewrites["ip_src"], result.rewrites["tp_src"]
        assert int_to_ip(src) == "192.0.2.2" and 20000 <= sport <= 20099
        seen.add(sport)
        assert {w.kind for w in result.state_writes} == {"nat"}
        back = cloud.send("uplink", tcp_frame(EXT_MAC, rmac(cloud, "uplink"), "198.51.100.7", "192.0.2.2", 80, sport))
        assert cloud.names(back.egress_port_ids) == [port] and shown(back) == {"ip_dst": ip, "tp_dst": 3333}
    assert len(seen) == 3
    again = cloud.send("vm1", tcp_frame(VM1_MAC, rmac(cloud, "rtr-web"), "10.0.1.11", "198.51.100.7", 3333, 80))
    assert again.rewrites["tp_src"] in seen and again.state_writes == []  # the same flow keeps its binding


def test_snat_of_icmp_echo_uses_the_identifier_and_can_run_out(cloud: Cloud) -> None:
    pre = uplink_snat(cloud, 7000, 7000)
    first = cloud.send("vm1", ping_frame(VM1_MAC, rmac(cloud, "rtr-web"), "10.0.1.11", "198.51.100.7", ident=1))
    assert shown(first) == {"ip_src": "192.0.2.2", "icmp_id": 7000}
    rule(cloud, pre, type="rev_snat")
    reply = Icmp.echo(False, 7000, 1, b"abc")
    ip = IPv4(ip_to_int("198.51.100.7"), ip_to_int("192.0.2.2"), PROTO_ICMP, reply.build())
    back = cloud.send("uplink", Ethernet(rmac(cloud, "uplink"), EXT_MAC, ETH_P_IP, ip.build()).build())
    assert cloud.names(back.egress_port_ids) == ["vm1"]  # the reply carries the translated id in both places
    assert shown(back) == {"ip_dst": "10.0.1.11", "icmp_id": 1}
    second = cloud.send("vm2", ping_frame(VM2_MAC, rmac(cloud, "rtr-web"), "10.0.1.12", "198.51.100.7", ident=1))
    assert (second.verdict, second.reason) == (Verdict.DROP, Reason.NAT_EXHAUSTED)


def lb(cloud: Cloud, persistence: str | None = None) -> dict[str, str]:
    lb_id = cloud.topo.create("load_balancers", {"router_id": cloud["rtr"]})["id"]
    pool = cloud.topo.create("pools", {"load_balancer_id": lb_id})["id"]
    a = cloud.topo.create("pool_members", {"pool_id": pool, "address": "10.0.2.13", "protocol_port": 8080})["id"]
    b = cloud.topo.create(
        "pool_members", {"pool_id": pool, "address": "10.0.2.14", "protocol_port": 8080, "weight": 3}
    )["id"]
    cloud.topo.create(
        "vips", {"pool_id": pool, "address": "192.0.2.20", "protocol_port": 80, "session_persistence": persistence}
    )
    return {"a": a, "b": b, "pool": pool}


def to_vip(cloud: Cloud, src: str, sport: int) -> SimulationResult:
    return cloud.send("uplink", tcp_frame(EXT_MAC, rmac(cloud, "uplink"), src, "192.0.2.20", sport, 80))


def test_load_balancer_spreads_by_weight_and_skips_down_members(cloud: Cloud) -> None:
    known_neighbours(cloud)
    ids = lb(cloud)
    chosen = [int_to_ip(to_vip(cloud, "198.51.100.7", port).rewrites["ip_dst"]) for port in range(1000, 1200)]
    share_b = chosen.count("10.0.2.14") / len(chosen)
    assert set(chosen) == {"10.0.2.13", "10.0.2.14"} and 0.6 < share_b < 0.9  # weight 3 of 4
    result = to_vip(cloud, "198.51.100.7", 5000)
    assert {"ip_src", "ip_dst", "ip_proto", "tp_src", "tp_dst"} <= set(result.match.fields())
    assert result.rewrites["tp_dst"] == 8080
    cloud.topo.update("pool_members", ids["b"], {"admin_state_up": False})
    assert {int_to_ip(to_vip(cloud, "198.51.100.8", p).rewrites["ip_dst"]) for p in range(50)} == {"10.0.2.13"}
    cloud.topo.update("pool_members", ids["a"], {"admin_state_up": False})
    assert to_vip(cloud, "198.51.100.8", 77).reason is Reason.NO_POOL_MEMBER


def test_a_drained_member_keeps_its_connections_and_gets_no_new_one(cloud: Cloud) -> None:
    known_neighbours(cloud)
    ids = lb(cloud)
    member = {p: int_to_ip(to_vip(cloud, "198.51.100.7", p).rewrites["ip_dst"]) for p in range(1000, 1100)}
    on_b = [p for p, address in member.items() if address == "10.0.2.14"]
    assert on_b
    cloud.topo.update("pool_members", ids["b"], {"weight": 0})
    assert {int_to_ip(to_vip(cloud, "198.51.100.7", p).rewrites["ip_dst"]) for p in on_b} == {"10.0.2.14"}
    new = {int_to_ip(to_vip(cloud, "198.51.100.7", p).rewrites["ip_dst"]) for p in range(2000, 2100)}
    assert new == {"10.0.2.13"}


def test_a_udp_vip_balances_udp_and_answers_from_the_vip(cloud: Cloud) -> None:
    known_neighbours(cloud)
    vm4 = cloud.topo.create("ports", {"device_id": cloud["db"], "name": "vm4"})["id"]
    cloud.topo.bind(vm4, "host-1", "tap4")
    cloud.ids["vm4"] = vm4
    lb_id = cloud.topo.create("load_balancers", {"router_id": cloud["rtr"]})["id"]
    pool = cloud.topo.create("pools", {"load_balancer_id": lb_id, "protocol": "udp"})["id"]
    for address in ("10.0.2.13", "10.0.2.14"):
        cloud.topo.create("pool_members", {"pool_id": pool, "address": address, "protocol_port": 5353})
    cloud.topo.create("vips", {"pool_id": pool, "address": "192.0.2.20", "protocol_port": 53})
    behind = {"10.0.2.13": ("vm3", VM3_MAC), "10.0.2.14": ("vm4", "02:00:00:00:00:04")}
    seen = set()
    for sport in range(40000, 40020):
        query = udp_frame(EXT_MAC, rmac(cloud, "uplink"), "198.51.100.7", "192.0.2.20", sport, 53, b"q")
        member = int_to_ip(cloud.send("uplink", query).rewrites["ip_dst"])
        seen.add(member)
        port, mac = behind[member]
        answer = cloud.send(port, udp_frame(mac, rmac(cloud, "rtr-db"), member, "198.51.100.7", 5353, sport, b"a"))
        assert cloud.names(answer.egress_port_ids) == ["uplink"]
        assert shown(answer) == {"ip_src": "192.0.2.20", "tp_src": 53}
    assert seen == set(behind)
    tcp = to_vip(cloud, "198.51.100.7", 40000)  # (a TCP packet to the UDP VIP's address and port: not balanced)
    assert "ip_dst" not in tcp.rewrites


def test_source_ip_persistence_and_reverse_dnat(cloud: Cloud) -> None:
    known_neighbours(cloud)
    vm4 = cloud.topo.create("ports", {"device_id": cloud["db"], "name": "vm4"})["id"]
    cloud.topo.bind(vm4, "host-1", "tap4")
    cloud.ids["vm4"] = vm4
    lb(cloud, "source_ip")
    behind = {"10.0.2.13": ("vm3", VM3_MAC), "10.0.2.14": ("vm4", "02:00:00:00:00:04")}
    for client in ("198.51.100.7", "198.51.100.8", "198.51.100.9"):
        members = {int_to_ip(to_vip(cloud, client, port).rewrites["ip_dst"]) for port in range(1000, 1030)}
        assert len(members) == 1, client  # one client, one member, whatever its ports
        member = members.pop()
        port, mac = behind[member]
        reply = cloud.send(port, tcp_frame(mac, rmac(cloud, "rtr-db"), member, client, 8080, 1000))
        assert cloud.names(reply.egress_port_ids) == ["uplink"]
        assert shown(reply) == {"ip_src": "192.0.2.20", "tp_src": 80}


def test_icmp_errors_about_translated_flows_are_translated_inside_too(cloud: Cloud) -> None:
    from kumo.packet.ethernet import ETH_P_IP, Ethernet
    from kumo.packet.icmp import DEST_UNREACH, PORT_UNREACH, Icmp
    from kumo.packet.ipv4 import PROTO_ICMP, PROTO_TCP, IPv4
    from kumo.packet.tcp import Tcp
    from kumo.simulation.wildcard import WildcardTable

    known_neighbours(cloud)
    pre, post = nat_chains(cloud)
    rule(cloud, post, type="snat", nw_src="10.0.1.11/32", out_port_ids=[cloud["uplink"]], nat_targets=[ONE_TO_ONE])
    rule(cloud, pre, type="rev_snat")
    out = cloud.send("vm1", tcp_frame(VM1_MAC, rmac(cloud, "rtr-web"), "10.0.1.11", "198.51.100.9", 4000, 443))
    assert shown(out) == {"ip_src": "192.0.2.10"}
    # the far side answers with "port unreachable", quoting the packet as it saw it (translated)
    fip, far = ip_to_int("192.0.2.10"), ip_to_int("198.51.100.9")
    quoted = IPv4(fip, far, PROTO_TCP, Tcp(4000, 443).build(fip, far), ttl=60).build()
    error = Icmp.error(DEST_UNREACH, PORT_UNREACH, quoted).build()
    frame = Ethernet(rmac(cloud, "uplink"), EXT_MAC, ETH_P_IP, IPv4(far, fip, PROTO_ICMP, error).build()).build()
    result = cloud.send("uplink", frame)
    assert (result.verdict, cloud.names(result.egress_port_ids)) == (Verdict.OUTPUT, ["vm1"])
    assert shown(result) == {"ip_dst": "10.0.1.11"}
    assert result.inner_rewrites == {"ip_src": ip_to_int("10.0.1.11"), "tp_src": 4000}
    assert result.one_off and not WildcardTable().insert(result)
    # an error quoting a flow nobody translated is left alone
    stray = IPv4(fip, far, PROTO_TCP, Tcp(4001, 443).build(fip, far)).build()
    frame = Ethernet(
        rmac(cloud, "uplink"),
        EXT_MAC,
        ETH_P_IP,
        IPv4(far, fip, PROTO_ICMP, Icmp.error(DEST_UNREACH, PORT_UNREACH, stray).build()).build(),
    ).build()
    assert cloud.send("uplink", frame).inner_rewrites == {}
