"""The REST contract of API.md: paths, status codes and error bodies."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from kumo.topology.errors import StoreUnavailable
from kumo.topology.state import ARP_TABLE, MAC_TABLE, arp_key, mac_key


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def error(response: Any, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message"}
    if code is not None:
        assert body["error"] == code
    return str(body["message"])


def test_create_with_empty_or_no_body_and_full_crud(api: TestClient) -> None:
    bridge = ok(api.post("/v1/bridges", json={}), 201)
    assert bridge["admin_state_up"] is True and bridge["name"] is None
    ok(api.post("/v1/bridges"), 201)
    named = ok(api.post("/v1/bridges", json={"id": "b-fixed", "name": "web", "tenant_id": "t1"}), 201)
    assert named["id"] == "b-fixed"
    assert len(ok(api.get("/v1/bridges"))) == 3
    assert ok(api.patch("/v1/bridges/b-fixed", json={"name": "web2"}))["name"] == "web2"
    assert ok(api.get("/v1/bridges/b-fixed"))["name"] == "web2"
    assert api.delete("/v1/bridges/b-fixed").status_code == 204
    error(api.get("/v1/bridges/b-fixed"), 404, "not_found")
    error(api.post("/v1/bridges", json={"id": bridge["id"]}), 409, "already_exists")


def test_bad_input_gets_4xx_naming_the_field(api: TestClient) -> None:
    bad_json = api.post("/v1/bridges", content=b'{"name": ', headers={"content-type": "application/json"})
    assert "not valid JSON" in error(bad_json, 400, "malformed_json")
    assert "admin_state_up" in error(api.post("/v1/bridges", json={"admin_state_up": "maybe"}), 422)
    assert "nmae: unknown field" in error(api.post("/v1/bridges", json={"nmae": "x"}), 422)
    assert "asn" in error(api.post("/v1/routers", json={"asn": -1}), 422)
    assert "device_id" in error(api.post("/v1/ports", json={}), 422)
    assert "device_id: no bridge or router" in error(api.post("/v1/ports", json={"device_id": "nope"}), 404)
    assert "tunnel_key" in error(api.post("/v1/ports", json={"device_id": "x", "tunnel_key": 3}), 422)
    assert "no such path" in error(api.get("/v1/nothing-here"), 404)
    error(api.put("/v1/bridges"), 405, "method_not_allowed")
    error(api.post("/v1/bridges", json=[1, 2]), 422)


def test_nested_routes_and_parent_checks(api: TestClient) -> None:
    r1 = ok(api.post("/v1/routers", json={"name": "r1"}), 201)
    r2 = ok(api.post("/v1/routers", json={"name": "r2"}), 201)
    port = ok(
        api.post(
            "/v1/ports",
            json={"device_id": r1["id"], "port_address": "10.0.0.1", "network_cidr": "10.0.0.0/24"},
        ),
        201,
    )
    route = ok(
        api.post(
            f"/v1/routers/{r1['id']}/routes",
            json={"dst_cidr": "0.0.0.0/0", "next_hop_port_id": port["id"], "next_hop_gateway": "10.0.0.254"},
        ),
        201,
    )
    assert route["router_id"] == r1["id"]
    assert len(ok(api.get(f"/v1/routers/{r1['id']}/routes"))) == 3  # + LOCAL and network routes
    ok(api.get(f"/v1/routers/{r1['id']}/routes/{route['id']}"))
    error(api.get(f"/v1/routers/{r2['id']}/routes/{route['id']}"), 404)
    error(api.get("/v1/routers/nope/routes"), 404)
    assert "router_id" in error(
        api.post(f"/v1/routers/{r1['id']}/routes", json={"router_id": r2["id"], "dst_cidr": "1.0.0.0/8"}), 422
    )
    ok(api.patch(f"/v1/routes/{route['id']}", json={"weight": 10}))
    assert "learned: read-only" in error(api.patch(f"/v1/routes/{route['id']}", json={"learned": True}), 422)
    assert api.delete(f"/v1/routers/{r1['id']}/routes/{route['id']}").status_code == 204


def test_rules_by_chain_and_by_id(api: TestClient) -> None:
    chain = ok(api.post("/v1/chains", json={"name": "fw"}), 201)
    rule = ok(
        api.post(
            f"/v1/chains/{chain['id']}/rules",
            json={"type": "drop", "nw_proto": 6, "tp_dst": {"start": 80, "end": 80}},
        ),
        201,
    )
    assert rule["position"] == 1 and rule["fragment_policy"] is None
    ok(api.post(f"/v1/chains/{chain['id']}/rules", json={"type": "accept", "position": 1}), 201)
    assert ok(api.get(f"/v1/rules/{rule['id']}"))["position"] == 2
    assert ok(api.patch(f"/v1/rules/{rule['id']}", json={"position": 1}))["position"] == 1
    assert "position" in error(api.post(f"/v1/chains/{chain['id']}/rules", json={"type": "drop", "position": 0}), 422)
    assert "tp_dst" in error(
        api.post(f"/v1/chains/{chain['id']}/rules", json={"type": "drop", "tp_dst": {"start": 1}}), 422
    )
    ok(api.post("/v1/bridges", json={"inbound_filter_id": chain["id"]}), 201)
    assert "still used as inbound_filter_id" in error(api.delete(f"/v1/chains/{chain['id']}"), 409, "in_use")
    assert api.delete(f"/v1/rules/{rule['id']}").status_code == 204


def test_links_bindings_and_conflicts(api: TestClient) -> None:
    bridge = ok(api.post("/v1/bridges", json={}), 201)
    router = ok(api.post("/v1/routers", json={}), 201)
    bport = ok(api.post("/v1/ports", json={"device_id": bridge["id"]}), 201)
    rport = ok(
        api.post(
            "/v1/ports",
            json={"device_id": router["id"], "port_address": "10.0.0.1", "network_cidr": "10.0.0.0/24"},
        ),
        201,
    )
    assert bport["type"] == "bridge" and rport["type"] == "router" and rport["port_mac"]
    assert ok(api.post(f"/v1/ports/{bport['id']}/link", json={"peer_id": rport["id"]}))["peer_id"] == rport["id"]
    error(api.post(f"/v1/ports/{bport['id']}/link", json={"peer_id": rport["id"]}), 409, "port_already_linked")
    error(api.post(f"/v1/ports/{bport['id']}/link", json={}), 422)
    assert ok(api.delete(f"/v1/ports/{rport['id']}/link"))["peer_id"] is None
    vm = ok(api.post("/v1/ports", json={"device_id": bridge["id"]}), 201)
    bound = ok(api.put(f"/v1/ports/{vm['id']}/binding", json={"host_id": "h1", "interface_name": "tap0"}))
    assert (bound["host_id"], bound["interface_name"]) == ("h1", "tap0")
    error(api.put(f"/v1/ports/{bport['id']}/binding", json={"host_id": "h1", "interface_name": "tap0"}), 409)
    assert "interface_name" in error(
        api.put(f"/v1/ports/{bport['id']}/binding", json={"host_id": "h1", "interface_name": "a/b"}), 422
    )
    assert ok(api.delete(f"/v1/ports/{vm['id']}/binding"))["host_id"] is None
    ok(api.put(f"/v1/ports/{bport['id']}/binding", json={"host_id": "h1", "interface_name": "tap0"}))
    error(api.put("/v1/ports/nope/binding", json={"host_id": "h1", "interface_name": "tap9"}), 404)
    assert api.delete(f"/v1/bridges/{bridge['id']}").status_code == 204
    assert ok(api.get(f"/v1/ports/{rport['id']}"))["peer_id"] is None
    assert ok(api.get("/v1/ports")) == [ok(api.get(f"/v1/ports/{rport['id']}"))]


def test_dhcp_under_bridges(api: TestClient) -> None:
    b1 = ok(api.post("/v1/bridges", json={}), 201)
    b2 = ok(api.post("/v1/bridges", json={}), 201)
    subnet = ok(
        api.post(
            f"/v1/bridges/{b1['id']}/dhcp_subnets",
            json={
                "cidr": "10.0.0.0/24",
                "gateway": "10.0.0.1",
                "dns_servers": ["10.0.0.1"],
                "routes": [{"destination": "10.9.0.0/16", "gateway": "10.0.0.1"}],
            },
        ),
        201,
    )
    assert subnet["mtu"] == 1450 and subnet["server_address"] is None
    base = f"/v1/bridges/{b1['id']}/dhcp_subnets/{subnet['id']}/hosts"
    host = ok(
        api.post(
            base,
            json={
                "mac": "02:00:00:00:00:01",
                "ip_address": "10.0.0.10",
                "name": "vm1",
                "extra_options": [{"code": 42, "value": "10.0.0.1"}],
            },
        ),
        201,
    )
    assert ok(api.get(base)) == [host]
    ok(api.get(f"{base}/{host['id']}"))
    error(api.get(f"/v1/bridges/{b2['id']}/dhcp_subnets/{subnet['id']}/hosts"), 404)
    error(api.post(base, json={"mac": "02:00:00:00:00:01", "ip_address": "10.0.0.11"}), 409, "in_use")
    assert "mtu" in error(api.patch(f"/v1/bridges/{b1['id']}/dhcp_subnets/{subnet['id']}", json={"mtu": 20}), 422)
    assert api.delete(f"/v1/bridges/{b1['id']}/dhcp_subnets/{subnet['id']}").status_code == 204
    error(api.get(f"/v1/dhcp_hosts/{host['id']}"), 404)


def test_tunnel_zone_members_and_hosts(api: TestClient) -> None:
    zone = ok(api.post("/v1/tunnel_zones", json={"name": "tz"}), 201)
    assert zone["type"] == "vxlan"
    base = f"/v1/tunnel_zones/{zone['id']}/members"
    member = ok(api.put(f"{base}/host-1", json={"ip_address": "192.0.2.1"}))
    assert member["host_id"] == "host-1"
    ok(api.put(f"{base}/host-1", json={"ip_address": "192.0.2.9"}))
    assert [m["ip_address"] for m in ok(api.get(base))] == ["192.0.2.9"]
    assert "ip_address" in error(api.put(f"{base}/host-2", json={"ip_address": "nope"}), 422)
    assert api.delete(f"{base}/host-1").status_code == 204
    error(api.delete(f"{base}/host-1"), 404)
    error(api.put("/v1/tunnel_zones/nope/members/h", json={"ip_address": "192.0.2.1"}), 404)
    assert ok(api.get("/v1/hosts")) == []
    error(api.post("/v1/hosts", json={}), 405)


def test_learned_tables(api: TestClient) -> None:
    bridge = ok(api.post("/v1/bridges", json={}), 201)
    router = ok(api.post("/v1/routers", json={}), 201)
    store = api.app.state.topology.store  # type: ignore[attr-defined]
    store.state_put(MAC_TABLE, mac_key(bridge["id"], "02:00:00:00:00:01"), {"port_id": "p1"})
    store.state_put(MAC_TABLE, mac_key("other", "02:00:00:00:00:02"), {"port_id": "p2"})
    store.state_put(ARP_TABLE, arp_key(router["id"], "10.0.0.2"), {"mac": "02:00:00:00:00:01"})
    assert ok(api.get(f"/v1/bridges/{bridge['id']}/mac_table")) == [
        {"mac": "02:00:00:00:00:01", "vlan_id": None, "port_id": "p1"}
    ]
    assert ok(api.get(f"/v1/routers/{router['id']}/arp_table")) == [{"ip": "10.0.0.2", "mac": "02:00:00:00:00:01"}]
    error(api.get("/v1/bridges/nope/mac_table"), 404)


def test_load_balancing_and_edge(api: TestClient) -> None:
    router = ok(api.post("/v1/routers", json={"asn": 65001}), 201)
    lb = ok(api.post("/v1/load_balancers", json={"router_id": router["id"]}), 201)
    hm = ok(api.post("/v1/health_monitors", json={"delay": 5, "timeout": 2, "max_retries": 3}), 201)
    pool = ok(
        api.post(
            "/v1/pools",
            json={
                "load_balancer_id": lb["id"],
                "health_monitor_id": hm["id"],
                "lb_method": "source_ip",
                "protocol": "udp",
            },
        ),
        201,
    )
    refused = error(api.post("/v1/pools", json={"load_balancer_id": lb["id"], "lb_method": "least_connections"}), 422)
    assert "use round_robin" in refused and "or source_ip" in refused
    member = ok(
        api.post(
            "/v1/pool_members",
            json={"pool_id": pool["id"], "address": "10.0.0.5", "protocol_port": 8080, "weight": 3},
        ),
        201,
    )
    assert member["status"] == "up"
    error(api.patch(f"/v1/pool_members/{member['id']}", json={"status": "down"}), 422, "read_only_field")
    vip = ok(
        api.post(
            "/v1/vips",
            json={
                "pool_id": pool["id"],
                "address": "192.0.2.10",
                "protocol_port": 80,
                "session_persistence": "source_ip",
            },
        ),
        201,
    )
    assert vip["session_persistence"] == "source_ip"
    assert "lb_method" in error(api.post("/v1/pools", json={"load_balancer_id": lb["id"], "lb_method": "x"}), 422)
    peer = ok(api.post(f"/v1/routers/{router['id']}/bgp_peers", json={"asn": 65000, "address": "192.0.2.1"}), 201)
    assert peer["state"] == "no_uplink"  # no port of the router holds 192.0.2.1
    ok(api.post(f"/v1/routers/{router['id']}/bgp_networks", json={"cidr": "198.51.100.0/24"}), 201)
    assert api.delete(f"/v1/routers/{router['id']}").status_code == 204
    assert ok(api.get("/v1/pools")) == [] and ok(api.get("/v1/vips")) == []


def test_openapi_lists_the_contract(api: TestClient) -> None:
    paths = ok(api.get("/openapi.json"))["paths"]
    for path in [
        "/v1/bridges",
        "/v1/bridges/{id}",
        "/v1/routers",
        "/v1/ports",
        "/v1/ports/{id}/link",
        "/v1/ports/{id}/binding",
        "/v1/bridges/{id}/mac_table",
        "/v1/routers/{id}/arp_table",
        "/v1/routers/{router_id}/routes",
        "/v1/chains",
        "/v1/chains/{chain_id}/rules",
        "/v1/rules/{id}",
        "/v1/port_groups",
        "/v1/ip_addr_groups",
        "/v1/hosts",
        "/v1/tunnel_zones",
        "/v1/tunnel_zones/{id}/members",
        "/v1/tunnel_zones/{id}/members/{host_id}",
        "/v1/bridges/{bridge_id}/dhcp_subnets",
        "/v1/bridges/{bridge_id}/dhcp_subnets/{subnet_id}/hosts",
        "/v1/load_balancers",
        "/v1/pools",
        "/v1/pool_members",
        "/v1/vips",
        "/v1/health_monitors",
        "/v1/routers/{router_id}/bgp_peers",
        "/v1/routers/{router_id}/bgp_networks",
    ]:
        assert path in paths, path


def test_store_outage_is_a_503_that_says_so(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    store = api.app.state.topology.store  # type: ignore[attr-defined]

    def unreachable(kind: str) -> None:
        raise StoreUnavailable("ZooKeeper at 127.0.0.1:2181 is unreachable; retry when it is back")

    monkeypatch.setattr(store, "list_versioned", unreachable)
    assert "unreachable" in error(api.get("/v1/bridges"), 503, "store_unavailable")


def test_a_router_without_an_as_number_refuses_bgp_peers(api: TestClient) -> None:
    router = ok(api.post("/v1/routers", json={}), 201)
    peer = {"asn": 65000, "address": "192.0.2.1"}
    message = error(api.post(f"/v1/routers/{router['id']}/bgp_peers", json=peer), 409, "router_without_asn")
    assert message.startswith("asn: ") and "set the router's asn" in message
    ok(api.patch(f"/v1/routers/{router['id']}", json={"asn": 65100}))
    ok(api.post(f"/v1/routers/{router['id']}/bgp_peers", json=peer), 201)
