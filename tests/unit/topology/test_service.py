"""Referential integrity, cascades, uniqueness, links and bindings: the service on both store backends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from kumo.topology.errors import Conflict, InvalidInput, NotFound
from kumo.topology.resources import CLAIMS_KIND
from kumo.topology.service import Topology
from kumo.topology.state import put_learned_route, register_host
from kumo.topology.store.base import Store


@pytest.fixture
def topo(store: Store) -> Topology:
    return Topology(store)


def router_port(t: Topology, router: dict[str, Any], address: str, cidr: str, **extra: Any) -> dict[str, Any]:
    return t.create("ports", {"device_id": router["id"], "port_address": address, "network_cidr": cidr, **extra})


def snapshot(t: Topology) -> dict[str, int]:
    kinds = [
        "bridges",
        "routers",
        "ports",
        "routes",
        "chains",
        "rules",
        CLAIMS_KIND,
        "dhcp_subnets",
        "dhcp_hosts",
    ]
    return {k: len(t.store.list(k)) for k in kinds}


def test_ports_get_unique_tunnel_keys_and_router_ports_unique_local_macs(topo: Topology) -> None:
    bridge, router = topo.create("bridges", {}), topo.create("routers", {})
    keys = {topo.create("ports", {"device_id": bridge["id"]})["tunnel_key"] for _ in range(40)}
    assert len(keys) == 40 and all(1 <= k < 1 << 24 for k in keys)
    macs = {router_port(topo, router, f"10.{i}.0.1", f"10.{i}.0.0/24")["port_mac"] for i in range(10)}
    assert len(macs) == 10
    assert all(int(mac[:2], 16) & 0b11 == 0b10 for mac in macs)  # locally administered, unicast
    with pytest.raises(InvalidInput, match="tunnel_key: read-only"):
        topo.create("ports", {"device_id": bridge["id"], "tunnel_key": 5})
    with pytest.raises(Conflict, match="port_mac .* in use"):
        router_port(topo, router, "10.99.0.1", "10.99.0.0/24", port_mac=sorted(macs)[0])


def test_router_port_routes_follow_the_port(topo: Topology) -> None:
    router = topo.create("routers", {})
    port = router_port(topo, router, "10.0.1.1", "10.0.1.0/24")
    routes = {(r["dst_cidr"], r["type"]) for r in topo.list("routes", router_id=router["id"])}
    assert routes == {("10.0.1.1/32", "local"), ("10.0.1.0/24", "normal")}
    topo.update("ports", port["id"], {"port_address": "10.0.2.1", "network_cidr": "10.0.2.0/24"})
    routes = {(r["dst_cidr"], r["type"]) for r in topo.list("routes", router_id=router["id"])}
    assert routes == {("10.0.2.1/32", "local"), ("10.0.2.0/24", "normal")}
    topo.delete("ports", port["id"])
    assert topo.list("routes") == []


def test_routes_must_leave_through_their_own_router(topo: Topology) -> None:
    r1, r2 = topo.create("routers", {}), topo.create("routers", {})
    foreign = router_port(topo, r2, "10.0.0.1", "10.0.0.0/24")
    with pytest.raises(InvalidInput, match="not to router"):
        topo.create("routes", {"router_id": r1["id"], "dst_cidr": "0.0.0.0/0", "next_hop_port_id": foreign["id"]})
    with pytest.raises(NotFound, match="next_hop_port_id: no port"):
        topo.create("routes", {"router_id": r1["id"], "dst_cidr": "0.0.0.0/0", "next_hop_port_id": "nope"})


def test_deleting_a_bridge_cascades_and_unlinks_the_router_peer(topo: Topology) -> None:
    bridge, router = topo.create("bridges", {}), topo.create("routers", {})
    bport = topo.create("ports", {"device_id": bridge["id"]})
    rport = router_port(topo, router, "10.0.0.1", "10.0.0.0/24")
    topo.link(bport["id"], rport["id"])
    vm = topo.bind(topo.create("ports", {"device_id": bridge["id"]})["id"], "host-1", "tap0")
    subnet = topo.create("dhcp_subnets", {"bridge_id": bridge["id"], "cidr": "10.0.0.0/24"})
    topo.create("dhcp_hosts", {"subnet_id": subnet["id"], "mac": "02:00:00:00:00:01", "ip_address": "10.0.0.5"})
    topo.delete("bridges", bridge["id"])
    assert topo.list("ports", device_id=bridge["id"]) == []
    assert topo.list("dhcp_subnets") == [] and topo.list("dhcp_hosts") == []
    assert topo.get("ports", rport["id"])["peer_id"] is None
    claims = {c for c in topo.store.list_versioned(CLAIMS_KIND)}
    assert f"tunnel_key:{vm['tunnel_key']}" not in claims and "binding:host-1/tap0" not in claims
    # the freed interface can be bound again
    other = topo.create("ports", {"device_id": topo.create("bridges", {})["id"]})
    assert topo.bind(other["id"], "host-1", "tap0")["interface_name"] == "tap0"


def test_deleting_a_router_takes_its_routes_load_balancers_and_bgp(topo: Topology) -> None:
    router = topo.create("routers", {"asn": 65001})
    router_port(topo, router, "10.0.0.1", "10.0.0.0/24")
    lb = topo.create("load_balancers", {"router_id": router["id"]})
    monitor = topo.create("health_monitors", {})
    pool = topo.create("pools", {"load_balancer_id": lb["id"], "health_monitor_id": monitor["id"]})
    topo.create("pool_members", {"pool_id": pool["id"], "address": "10.0.0.10", "protocol_port": 80})
    topo.create("vips", {"pool_id": pool["id"], "address": "192.0.2.10", "protocol_port": 80})
    topo.create("bgp_peers", {"router_id": router["id"], "asn": 65000, "address": "192.0.2.1", "password": "s3"})
    topo.create("bgp_networks", {"router_id": router["id"], "cidr": "198.51.100.0/24"})
    with pytest.raises(Conflict, match="health_monitor_id of pool"):
        topo.delete("health_monitors", monitor["id"])
    topo.delete("routers", router["id"])
    for kind in (
        "ports",
        "routes",
        "load_balancers",
        "pools",
        "pool_members",
        "vips",
        "bgp_peers",
        "bgp_networks",
    ):
        assert topo.list(kind) == [], kind
    topo.delete("health_monitors", monitor["id"])


def test_chains_in_use_cannot_be_deleted(topo: Topology) -> None:
    chain, target = topo.create("chains", {"name": "c"}), topo.create("chains", {"name": "t"})
    bridge = topo.create("bridges", {"inbound_filter_id": chain["id"]})
    topo.create("rules", {"chain_id": chain["id"], "type": "jump", "jump_chain_id": target["id"]})
    with pytest.raises(Conflict, match="inbound_filter_id of bridge"):
        topo.delete("chains", chain["id"])
    with pytest.raises(Conflict, match="jump_chain_id of rule"):
        topo.delete("chains", target["id"])
    topo.update("bridges", bridge["id"], {"inbound_filter_id": None})
    topo.delete("chains", chain["id"])  # its rules go with it, and so does the jump
    assert topo.list("rules") == []
    topo.delete("chains", target["id"])


def test_port_groups_and_address_groups(topo: Topology) -> None:
    group = topo.create("port_groups", {"name": "web", "stateful": True})
    bridge = topo.create("bridges", {})
    port = topo.create("ports", {"device_id": bridge["id"], "port_group_ids": [group["id"]]})
    with pytest.raises(NotFound, match="port_group_ids: no port group"):
        topo.create("ports", {"device_id": bridge["id"], "port_group_ids": ["missing"]})
    addresses = topo.create("ip_addr_groups", {"name": "admins", "addresses": ["10.0.0.1", "10.0.0.2"]})
    chain = topo.create("chains", {})
    rule = topo.create(
        "rules",
        {
            "chain_id": chain["id"],
            "type": "accept",
            "ip_addr_group_src": addresses["id"],
            "in_port_ids": [port["id"]],
        },
    )
    with pytest.raises(Conflict, match="ip_addr_group_src"):
        topo.delete("ip_addr_groups", addresses["id"])
    with pytest.raises(Conflict, match="in_port_ids"):
        topo.delete("ports", port["id"])
    topo.delete("port_groups", group["id"])  # membership is cleared, the port stays
    assert topo.get("ports", port["id"])["port_group_ids"] == []
    topo.delete("rules", rule["id"])
    topo.delete("ports", port["id"])


def test_links_follow_the_rules(topo: Topology) -> None:
    b1, b2, router = topo.create("bridges", {}), topo.create("bridges", {}), topo.create("routers", {})
    p1, p2 = topo.create("ports", {"device_id": b1["id"]}), topo.create("ports", {"device_id": b2["id"]})
    with pytest.raises(InvalidInput, match="vlan_id"):
        topo.link(p1["id"], p2["id"])
    tagged = topo.create("ports", {"device_id": b2["id"], "vlan_id": 10})
    assert topo.link(p1["id"], tagged["id"])["peer_id"] == tagged["id"]
    with pytest.raises(Conflict, match="already linked"):
        topo.link(p1["id"], router_port(topo, router, "10.0.0.1", "10.0.0.0/24")["id"])
    with pytest.raises(Conflict, match="linked .* unlink it before binding"):
        topo.bind(p1["id"], "h", "tap0")
    with pytest.raises(InvalidInput, match="same device"):
        topo.link(p2["id"], topo.create("ports", {"device_id": b2["id"]})["id"])
    with pytest.raises(InvalidInput, match="itself"):
        topo.link(p2["id"], p2["id"])
    topo.unlink(tagged["id"])
    assert topo.get("ports", p1["id"])["peer_id"] is None
    with pytest.raises(Conflict, match="not linked"):
        topo.unlink(p1["id"])
    bound = topo.bind(p1["id"], "h", "tap0")
    with pytest.raises(Conflict, match="bound to tap0"):
        topo.link(bound["id"], tagged["id"])
    with pytest.raises(Conflict, match="already bound"):
        topo.bind(p2["id"], "h", "tap0")
    with pytest.raises(NotFound, match="peer_id: no port"):
        topo.link(p2["id"], "missing")


def test_failed_writes_leave_nothing_behind(topo: Topology) -> None:
    router = topo.create("routers", {})
    before = snapshot(topo)
    with pytest.raises(NotFound):
        router_port(topo, router, "10.0.0.1", "10.0.0.0/24", inbound_filter_id="no-such-chain")
    with pytest.raises(InvalidInput):
        router_port(topo, router, "10.0.0.1", "10.1.0.0/24")
    with pytest.raises(InvalidInput):
        topo.update("routers", router["id"], {"asn": 0})
    assert snapshot(topo) == before
    assert topo.get("routers", router["id"])["asn"] is None


def test_rule_positions(topo: Topology) -> None:
    chain = topo.create("chains", {})

    def order() -> list[str]:
        return [r["type"] for r in topo.list("rules", chain_id=chain["id"])]

    topo.create("rules", {"chain_id": chain["id"], "type": "drop"})
    topo.create("rules", {"chain_id": chain["id"], "type": "accept", "position": 1})
    last = topo.create("rules", {"chain_id": chain["id"], "type": "reject"})
    assert order() == ["accept", "drop", "reject"] and last["position"] == 3
    with pytest.raises(InvalidInput, match="between 1 and 4"):
        topo.create("rules", {"chain_id": chain["id"], "type": "drop", "position": 9})
    topo.update("rules", last["id"], {"position": 1})
    assert order() == ["reject", "accept", "drop"]
    topo.delete("rules", last["id"])
    assert order() == ["accept", "drop"]
    assert [r["position"] for r in topo.list("rules", chain_id=chain["id"])] == [1, 2]
    with pytest.raises(InvalidInput, match="chain_id: cannot be changed"):
        topo.update("rules", topo.list("rules")[0]["id"], {"chain_id": topo.create("chains", {})["id"]})


def test_concurrent_writers_lose_no_update(topo: Topology) -> None:
    chain = topo.create("chains", {})
    errors: list[Exception] = []

    def add_rules() -> None:
        try:
            for _ in range(10):
                topo.create("rules", {"chain_id": chain["id"], "type": "accept"})
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=add_rules) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(topo.get("chains", chain["id"])["rule_ids"]) == 30
    assert [r["position"] for r in topo.list("rules", chain_id=chain["id"])] == list(range(1, 31))


def test_dhcp_host_entries_are_unique_in_their_subnet(topo: Topology) -> None:
    bridge = topo.create("bridges", {})
    subnet = topo.create("dhcp_subnets", {"bridge_id": bridge["id"], "cidr": "10.0.0.0/24", "gateway": "10.0.0.1"})
    host = topo.create("dhcp_hosts", {"subnet_id": subnet["id"], "mac": "02:00:00:00:00:01", "ip_address": "10.0.0.5"})
    assert host["bridge_id"] == bridge["id"]
    with pytest.raises(Conflict, match="mac 02:00:00:00:00:01 already has a host entry"):
        topo.create("dhcp_hosts", {"subnet_id": subnet["id"], "mac": "02:00:00:00:00:01", "ip_address": "10.0.0.6"})
    with pytest.raises(Conflict, match="10.0.0.5 is already given"):
        topo.create("dhcp_hosts", {"subnet_id": subnet["id"], "mac": "02:00:00:00:00:02", "ip_address": "10.0.0.5"})
    with pytest.raises(InvalidInput, match="not inside the subnet"):
        topo.create("dhcp_hosts", {"subnet_id": subnet["id"], "mac": "02:00:00:00:00:03", "ip_address": "10.9.0.5"})
    topo.update("dhcp_hosts", host["id"], {"ip_address": "10.0.0.7"})
    topo.create("dhcp_hosts", {"subnet_id": subnet["id"], "mac": "02:00:00:00:00:02", "ip_address": "10.0.0.5"})


def test_hosts_tunnel_zones_and_liveness(topo: Topology) -> None:
    zone = topo.create("tunnel_zones", {"name": "underlay"})
    session = topo.store.open_session()
    register_host(topo.store, session, "host-1", "compute-1", ["192.0.2.11"])
    assert topo.get("hosts", "host-1")["alive"] is True
    topo.put_member(zone["id"], "host-1", "192.0.2.11")
    member = topo.put_member(zone["id"], "host-2", "192.0.2.12")  # not registered yet: accepted
    assert member["host_id"] == "host-2"
    with pytest.raises(Conflict, match="already the tunnel address"):
        topo.put_member(zone["id"], "host-3", "192.0.2.11")
    assert topo.put_member(zone["id"], "host-2", "192.0.2.22")["ip_address"] == "192.0.2.22"
    with pytest.raises(Conflict, match="alive"):
        topo.delete("hosts", "host-1")
    with pytest.raises(InvalidInput, match="cannot be created"):
        topo.create("hosts", {"id": "h"})
    session.close()
    topo.delete("hosts", "host-1")
    assert {m["host_id"] for m in topo.list("tunnel_zone_members")} == {"host-2"}
    topo.delete_member(zone["id"], "host-2")
    with pytest.raises(NotFound):
        topo.delete_member(zone["id"], "host-2")


def test_bgp_password_is_write_only(topo: Topology) -> None:
    router = topo.create("routers", {"asn": 65001})
    peer = topo.create(
        "bgp_peers", {"router_id": router["id"], "asn": 65000, "address": "192.0.2.1", "password": "secret"}
    )
    assert peer["password"] == "********"
    topo.update("bgp_peers", peer["id"], {"password": "********", "keepalive": 30})  # a round-tripped GET
    assert topo.store.get("bgp_peers", peer["id"])["password"] == "secret"
    with pytest.raises(Conflict, match="already has a BGP peer"):
        topo.create("bgp_peers", {"router_id": router["id"], "asn": 65002, "address": "192.0.2.1"})


def test_learned_routes_read_like_routes_and_vanish_with_their_session(topo: Topology) -> None:
    router = topo.create("routers", {"asn": 65001})
    uplink = router_port(topo, router, "192.0.2.2", "192.0.2.0/24")
    session = topo.store.open_session()
    learned = {
        "id": "bgp-198.51.100.0-24",
        "router_id": router["id"],
        "dst_cidr": "198.51.100.0/24",
        "src_cidr": "0.0.0.0/0",
        "next_hop_port_id": uplink["id"],
        "next_hop_gateway": "192.0.2.1",
        "weight": 100,
        "type": "normal",
    }
    put_learned_route(topo.store, session, learned)
    routes = {r["dst_cidr"]: r for r in topo.list("routes", router_id=router["id"])}
    assert routes["198.51.100.0/24"]["learned"] is True and routes["192.0.2.0/24"]["learned"] is False
    assert topo.get("routes", learned["id"])["next_hop_gateway"] == "192.0.2.1"
    with pytest.raises(Conflict, match="learned from BGP"):
        topo.update("routes", learned["id"], {"weight": 1})
    with pytest.raises(Conflict, match="learned from BGP"):
        topo.delete("routes", learned["id"])
    assert topo.list("routes", router_id="another-router") == []
    session.close()
    assert wait_until(lambda: len(topo.list("routes", router_id=router["id"])) == 2)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.02)
    return predicate()


def test_bgp_peers_need_their_routers_as_number(topo: Topology) -> None:
    router = topo.create("routers", {})
    with pytest.raises(Conflict, match=r"^asn: router .* has no AS number") as refused:
        topo.create("bgp_peers", {"router_id": router["id"], "asn": 65000, "address": "192.0.2.1"})
    assert refused.value.code == "router_without_asn"
    topo.update("routers", router["id"], {"asn": 4200000001})  # (a 4-byte AS)
    topo.create("bgp_peers", {"router_id": router["id"], "asn": 65000, "address": "192.0.2.1"})
    with pytest.raises(Conflict, match=r"^asn: router .* has BGP peers \(192.0.2.1\)"):
        topo.update("routers", router["id"], {"asn": None})
    assert topo.get("routers", router["id"])["asn"] == 4200000001
    topo.update("routers", router["id"], {"name": "edge"})  # other changes are fine


def test_writes_never_read_a_whole_kind(topo: Topology) -> None:
    """Creates, updates and deletes find what they need through the index: their cost does not grow with
    the number of objects (a whole-kind read is what made a delete take ~89 ms at 4,200 ports)."""
    bridge = topo.create("bridges", {})
    router = topo.create("routers", {})
    chain = topo.create("chains", {})
    group = topo.create("port_groups", {})
    for _ in range(5):
        topo.create("ports", {"device_id": bridge["id"], "port_group_ids": [group["id"]]})
    reads: list[str] = []
    real = topo.store.list_versioned
    topo.store.list_versioned = lambda kind: reads.append(kind) or real(kind)  # type: ignore[method-assign]
    port = topo.create("ports", {"device_id": bridge["id"], "inbound_filter_id": chain["id"]})
    rport = router_port(topo, router, "10.0.0.1", "10.0.0.0/24")
    topo.link(port["id"], rport["id"])
    topo.update("ports", rport["id"], {"port_address": "10.0.0.2"})
    rule = topo.create("rules", {"chain_id": chain["id"], "type": "accept", "in_port_ids": [port["id"]]})
    with pytest.raises(Conflict):
        topo.delete("ports", port["id"])  # a rule still names it
    topo.delete("rules", rule["id"])
    topo.update("ports", port["id"], {"inbound_filter_id": None})
    topo.delete("chains", chain["id"])
    topo.delete("port_groups", group["id"])
    topo.delete("ports", port["id"])
    topo.delete("bridges", bridge["id"])
    topo.delete("routers", router["id"])
    assert reads == []
    topo.store.list_versioned = real  # type: ignore[method-assign]
    assert topo.store.list("ports") == [] and topo.store.list("routes") == []
