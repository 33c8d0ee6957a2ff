from __future__ import annotations

from kumo.packet import ip_to_int
from kumo.packet.arp import REPLY, Arp
from kumo.packet.ethernet import ETH_P_ARP, Ethernet
from kumo.packet.icmp import (
    ADMIN_PROHIBITED,
    DEST_UNREACH,
    ECHO_REPLY,
    NET_UNREACH,
    TIME_EXCEEDED,
    Icmp,
)
from kumo.packet.ipv4 import IPv4
from kumo.simulation import Reason, Verdict
from tests.unit.simulation.conftest import VM1_MAC, VM3_MAC, Cloud, arp_request, ping_frame, tcp_frame


def rmac(cloud: Cloud, port: str) -> str:
    return str(cloud.obj("ports", port)["port_mac"])


def icmp_of(frame: bytes) -> tuple[IPv4, Icmp]:
    ip = IPv4.parse(Ethernet.parse(frame).payload)
    return ip, Icmp.parse(ip.payload)


def test_routed_packet_waits_for_arp_then_crosses(cloud: Cloud) -> None:
    frame = tcp_frame(VM1_MAC, rmac(cloud, "rtr-web"), "10.0.1.11", "10.0.2.13", 1000, 5432)
    parked = cloud.send("vm1", frame)
    assert (parked.verdict, parked.reason) == (Verdict.PARK, Reason.WAITING_FOR_ARP)
    assert parked.park_until == ("arp", cloud["rtr"], "10.0.2.13")
    (request,) = parked.generated
    assert request.port_id == cloud["rtr-db"]
    assert Arp.parse(Ethernet.parse(request.frame).payload).tpa == ip_to_int("10.0.2.13")

    # vm3 answers; the router learns, and the packet goes through
    reply = Arp(REPLY, VM3_MAC, ip_to_int("10.0.2.13"), rmac(cloud, "rtr-db"), ip_to_int("10.0.2.1"))
    learned = cloud.send("vm3", Ethernet(rmac(cloud, "rtr-db"), VM3_MAC, ETH_P_ARP, reply.build()).build())
    assert (learned.verdict, learned.reason) == (Verdict.CONSUME, Reason.ARP_LEARNED)
    result = cloud.send("vm1", frame)
    assert (result.verdict, cloud.names(result.egress_port_ids)) == (Verdict.OUTPUT, ["vm3"])  # learned from its ARP
    assert result.rewrites == {"eth_src": rmac(cloud, "rtr-db"), "eth_dst": VM3_MAC}
    assert result.ttl_decrement == 1
    assert [s.device_type for s in result.trace if s.stage == "router.routing"] == ["router"]
    devices = [s.device_id for s in result.trace]
    assert devices.index(cloud["web"]) < devices.index(cloud["rtr"]) < devices.index(cloud["db"])
    # vm1 was learned by the first send; the egress bridge knows the router port's MAC from the topology
    assert result.learn_writes == []


def test_router_answers_arp_and_ping_on_its_ports(cloud: Cloud) -> None:
    arp = cloud.send("uplink", arp_request("02:00:00:00:00:99", "192.0.2.1", "192.0.2.2"))
    assert (arp.verdict, arp.reason) == (Verdict.REPLY, Reason.ARP_REPLY)
    assert cloud.learned.arps[(cloud["rtr"], ip_to_int("192.0.2.1"))] == "02:00:00:00:00:99"
    outside = cloud.send("uplink", arp_request("02:00:00:00:00:98", "198.51.100.7", "192.0.2.2"))
    assert outside.reason is Reason.ARP_NOT_IN_SUBNET
    ping = cloud.send("vm1", ping_frame(VM1_MAC, rmac(cloud, "rtr-web"), "10.0.1.11", "10.0.2.1"))
    assert (ping.verdict, ping.reason) == (Verdict.REPLY, Reason.ICMP_ECHO_REPLY)
    ip, icmp = icmp_of(ping.generated[0].frame)
    assert (ip.src, ip.dst, icmp.type, icmp.payload) == (
        ip_to_int("10.0.2.1"),
        ip_to_int("10.0.1.11"),
        ECHO_REPLY,
        b"abc",
    )


def test_ttl_one_gets_time_exceeded(cloud: Cloud) -> None:
    result = cloud.send("vm1", tcp_frame(VM1_MAC, rmac(cloud, "rtr-web"), "10.0.1.11", "10.0.2.13", 1, 2, ttl=1))
    assert (result.verdict, result.reason) == (Verdict.DROP, Reason.TTL_EXPIRED)
    ip, icmp = icmp_of(result.generated[0].frame)
    assert (icmp.type, icmp.code, ip.src, ip.dst) == (TIME_EXCEEDED, 0, ip_to_int("10.0.1.1"), ip_to_int("10.0.1.11"))
    assert IPv4.parse(icmp.payload + bytes(64)).dst == ip_to_int("10.0.2.13")  # the quoted header
    assert "ip_ttl" in result.match.fields()


def test_flows_with_ttl_above_one_are_not_keyed_on_ttl(cloud: Cloud) -> None:
    cloud.learned.arps[(cloud["rtr"], ip_to_int("10.0.2.13"))] = VM3_MAC
    result = cloud.send("vm1", tcp_frame(VM1_MAC, rmac(cloud, "rtr-web"), "10.0.1.11", "10.0.2.13", 1, 2, ttl=9))
    assert result.verdict in (Verdict.OUTPUT, Verdict.FLOOD) and "ip_ttl" not in result.match.fields()


def test_no_route_reject_and_blackhole(cloud: Cloud) -> None:
    cloud.topo.delete("routes", cloud["default"])
    frame = tcp_frame(VM1_MAC, rmac(cloud, "rtr-web"), "10.0.1.11", "203.0.113.5", 1, 2)
    result = cloud.send("vm1", frame)
    assert (result.verdict, result.reason) == (Verdict.DROP, Reason.NO_ROUTE)
    assert icmp_of(result.generated[0].frame)[1].code == NET_UNREACH
    cloud.topo.create("routes", {"router_id": cloud["rtr"], "dst_cidr": "203.0.113.0/24", "type": "reject"})
    result = cloud.send("vm1", frame)
    assert result.reason is Reason.REJECT_ROUTE
    assert (icmp_of(result.generated[0].frame)[1].type, icmp_of(result.generated[0].frame)[1].code) == (
        DEST_UNREACH,
        ADMIN_PROHIBITED,
    )
    cloud.topo.create("routes", {"router_id": cloud["rtr"], "dst_cidr": "203.0.113.5/32", "type": "blackhole"})
    result = cloud.send("vm1", frame)
    assert (result.reason, result.generated) == (Reason.BLACKHOLE_ROUTE, [])


def test_no_icmp_error_about_icmp_errors_or_to_broadcast(cloud: Cloud) -> None:
    cloud.topo.delete("routes", cloud["default"])
    error = Icmp(DEST_UNREACH, 1, 0, bytes(28))
    frame = Ethernet(
        rmac(cloud, "rtr-web"),
        VM1_MAC,
        0x0800,
        IPv4(ip_to_int("10.0.1.11"), ip_to_int("203.0.113.5"), 1, error.build()).build(),
    ).build()
    result = cloud.send("vm1", frame)
    assert (result.reason, result.generated) == (Reason.NO_ROUTE, [])


def test_frames_not_for_the_router_mac_are_dropped(cloud: Cloud) -> None:
    cloud.learned.macs[(cloud["web"], "02:00:00:00:00:77", None)] = cloud["web-up"]
    result = cloud.send("vm1", tcp_frame(VM1_MAC, "02:00:00:00:00:77", "10.0.1.11", "10.0.2.13", 1, 2))
    assert (result.verdict, result.reason) == (Verdict.DROP, Reason.NOT_FOR_ROUTER)


def test_longest_prefix_source_filter_weight_and_ecmp(cloud: Cloud) -> None:
    r, up = cloud["rtr"], cloud["uplink"]
    for ip, mac in (
        ("192.0.2.1", "02:00:00:00:00:91"),
        ("192.0.2.9", "02:00:00:00:00:99"),
        ("192.0.2.8", "02:00:00:00:00:98"),
    ):
        cloud.learned.arps[(r, ip_to_int(ip))] = mac

    def via(dst: str, src: str = "10.0.1.11", sport: int = 1) -> str:
        result = cloud.send("vm1", tcp_frame(VM1_MAC, rmac(cloud, "rtr-web"), src, dst, sport, 80))
        return str(result.rewrites["eth_dst"])

    def route(gateway: str, **extra: object) -> None:
        cloud.topo.create(
            "routes",
            {
                "router_id": r,
                "dst_cidr": "198.51.100.0/24",
                "next_hop_port_id": up,
                "next_hop_gateway": gateway,
                **extra,
            },
        )

    route("192.0.2.9")
    assert via("198.51.100.7") == "02:00:00:00:00:99"  # longer prefix than the default
    route("192.0.2.8", src_cidr="10.0.9.0/24")
    assert via("198.51.100.7") == "02:00:00:00:00:99"  # source filter does not match 10.0.1.11
    route("192.0.2.8", weight=50)
    assert via("198.51.100.7") == "02:00:00:00:00:98"  # lower weight wins
    route("192.0.2.1", weight=50)
    hops = {via("198.51.100.7", sport=port) for port in range(1, 40)}
    assert hops == {"02:00:00:00:00:98", "02:00:00:00:00:91"}  # ECMP spreads flows over equal routes


def test_when_one_of_four_equal_routes_goes_only_its_flows_move(cloud: Cloud) -> None:
    """ECMP by a consistent hash: a route that goes moves its own flows to the others and no other flow;
    when it comes back, the flows it takes are only ones that were its own."""
    r, up = cloud["rtr"], cloud["uplink"]
    hops = {f"192.0.2.{i}": f"02:00:00:00:00:{90 + i}" for i in range(1, 5)}
    routes = {}
    for ip, mac in hops.items():
        cloud.learned.arps[(r, ip_to_int(ip))] = mac
        routes[mac] = cloud.topo.create(
            "routes",
            {"router_id": r, "dst_cidr": "198.51.100.0/24", "next_hop_port_id": up, "next_hop_gateway": ip},
        )

    def paths() -> list[str]:
        return [
            str(
                cloud.send(
                    "vm1", tcp_frame(VM1_MAC, rmac(cloud, "rtr-web"), "10.0.1.11", "198.51.100.7", sport, 80)
                ).rewrites["eth_dst"]
            )
            for sport in range(1000, 1400)
        ]

    before = paths()
    assert set(before) == set(hops.values())
    gone = "02:00:00:00:00:92"
    cloud.topo.delete("routes", routes[gone]["id"])
    after = paths()
    assert gone not in after
    assert all(was == now for was, now in zip(before, after, strict=True) if was != gone)
    cloud.topo.create(
        "routes",
        {"router_id": r, "dst_cidr": "198.51.100.0/24", "next_hop_port_id": up, "next_hop_gateway": "192.0.2.2"},
    )
    assert paths() == before  # the same next hop again: the same flows, though the route is a new object


def test_next_hops_known_from_dhcp_entries_need_no_arp(cloud: Cloud) -> None:
    subnet = cloud.topo.create("dhcp_subnets", {"bridge_id": cloud["db"], "cidr": "10.0.2.0/24"})
    cloud.topo.create("dhcp_hosts", {"subnet_id": subnet["id"], "mac": VM3_MAC, "ip_address": "10.0.2.13"})
    result = cloud.send("vm1", tcp_frame(VM1_MAC, rmac(cloud, "rtr-web"), "10.0.1.11", "10.0.2.13", 1, 2))
    assert result.verdict is Verdict.FLOOD and result.rewrites["eth_dst"] == VM3_MAC


def test_a_routing_loop_stops_at_the_device_limit(cloud: Cloud) -> None:
    other = cloud.topo.create("routers", {"name": "r2"})["id"]
    a = cloud.topo.create(
        "ports", {"device_id": cloud["rtr"], "port_address": "10.255.0.1", "network_cidr": "10.255.0.0/30"}
    )["id"]
    b = cloud.topo.create("ports", {"device_id": other, "port_address": "10.255.0.2", "network_cidr": "10.255.0.0/30"})[
        "id"
    ]
    cloud.topo.link(a, b)
    cloud.topo.create("routes", {"router_id": cloud["rtr"], "dst_cidr": "198.18.0.0/15", "next_hop_port_id": a})
    cloud.topo.create("routes", {"router_id": other, "dst_cidr": "198.18.0.0/15", "next_hop_port_id": b})
    result = cloud.send("vm1", tcp_frame(VM1_MAC, rmac(cloud, "rtr-web"), "10.0.1.11", "198.18.0.1", 1, 2))
    assert (result.verdict, result.reason) == (Verdict.DROP, Reason.LOOP_LIMIT)


def test_gratuitous_arp_inside_the_subnet_is_learned(cloud: Cloud) -> None:
    announce = cloud.send("uplink", arp_request("02:00:00:00:00:aa", "192.0.2.77", "192.0.2.77"))
    assert (announce.verdict, announce.reason) == (Verdict.CONSUME, Reason.ARP_LEARNED)
    assert cloud.learned.arps[(cloud["rtr"], ip_to_int("192.0.2.77"))] == "02:00:00:00:00:aa"
    foreign = cloud.send("uplink", arp_request("02:00:00:00:00:bb", "203.0.113.9", "203.0.113.9"))
    assert foreign.reason is Reason.ARP_NOT_IN_SUBNET
    assert (cloud["rtr"], ip_to_int("203.0.113.9")) not in cloud.learned.arps


def test_fragmentation_needed_for_df_packets_over_the_egress_mtu(cloud: Cloud) -> None:
    from kumo.packet.icmp import FRAG_NEEDED
    from kumo.packet.ipv4 import FLAG_DF, PROTO_UDP
    from kumo.packet.udp import Udp

    cloud.topo.update("ports", cloud["rtr-db"], {"mtu": 1400})
    cloud.learned.arps[(cloud["rtr"], ip_to_int("10.0.2.13"))] = VM3_MAC
    src, dst = ip_to_int("10.0.1.11"), ip_to_int("10.0.2.13")

    def udp(size: int, flags: int) -> bytes:
        ip = IPv4(src, dst, PROTO_UDP, Udp(1, 2, bytes(size)).build(src, dst), flags_offset=flags)
        return Ethernet(rmac(cloud, "rtr-web"), VM1_MAC, 0x0800, ip.build()).build()

    big = cloud.send("vm1", udp(1400, FLAG_DF))
    assert (big.verdict, big.reason) == (Verdict.DROP, Reason.FRAGMENTATION_NEEDED)
    ip, icmp = icmp_of(big.generated[0].frame)
    assert (icmp.type, icmp.code, icmp.rest & 0xFFFF, ip.dst) == (DEST_UNREACH, FRAG_NEEDED, 1400, src)
    assert big.one_off
    small = cloud.send("vm1", udp(100, FLAG_DF))
    assert small.verdict in (Verdict.OUTPUT, Verdict.FLOOD) and small.path_mtu == 1400
    unfenced = cloud.send("vm1", udp(1400, 0))  # without DF a larger packet may pass (and be fragmented)
    assert unfenced.verdict in (Verdict.OUTPUT, Verdict.FLOOD)


def test_routes_through_a_dead_hosts_exterior_port_are_withdrawn_until_it_returns(cloud: Cloud) -> None:
    from kumo.topology.state import register_host

    store = cloud.topo.store
    session = store.open_session()
    register_host(store, session, "host-1")  # the uplink's host: alive
    cloud.learned.arps[(cloud["rtr"], ip_to_int("192.0.2.1"))] = "02:00:00:00:00:99"
    frame = tcp_frame(VM1_MAC, rmac(cloud, "rtr-web"), "10.0.1.11", "203.0.113.5", 1, 2)
    assert cloud.send("vm1", frame).verdict is Verdict.OUTPUT
    session.close()  # its agent is gone: the default route via the uplink goes with it
    result = cloud.send("vm1", frame)
    assert (result.verdict, result.reason) == (Verdict.DROP, Reason.NO_ROUTE)
    assert f"routes:{cloud['rtr']}" in result.tags  # (a host coming back invalidates exactly these flows)
    session = store.open_session()
    register_host(store, session, "host-1")
    assert cloud.send("vm1", frame).verdict is Verdict.OUTPUT
    session.close()
