"""POST /v1/traces: the journey of a described packet; nothing is written."""

from __future__ import annotations

from fastapi.testclient import TestClient

from kumo.client import Client
from kumo.demo import build_sample_cloud
from kumo.testing.apiserver import ApiServer
from kumo.topology.state import put_learned_route
from kumo.topology.store.sqlite import SqliteStore


def test_trace_on_the_demo_topology_crosses_bridge_router_bridge_with_nat(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = SqliteStore(tmp_path / "kumo.db")
    try:
        with ApiServer(store) as api, Client(api.url) as client:
            build_sample_cloud(client)
            ports = {p["name"]: p["id"] for p in client.ports.list()}
            before = {k: len(store.list(k)) for k in ("claims", "ports", "routes")}
            journey = client.trace(
                ports["web-1-port"], {"ip_src": "10.0.1.11", "ip_dst": "10.0.9.10", "proto": "tcp", "dst_port": 5432}
            )
            types = [s["device_type"] for s in journey["steps"] if s["device_type"] != "port"]
            assert types[0] == "bridge" and "router" in types and types[-1] == "bridge"
            assert any(s["what"].startswith("dnat: rewrite ip_dst=10.0.2.20") for s in journey["steps"])
            assert any(s["chain_id"] and s["rule_id"] and s["what"] == "rule accept" for s in journey["steps"])
            result = journey["result"]
            assert (result["action"], result["packet"]["ip_dst"], result["packet"]["ttl"]) == ("flood", "10.0.2.20", 63)
            assert result["egress_port_ids"] == [ports["db-1-port"]]
            assert {k: len(store.list(k)) for k in ("claims", "ports", "routes")} == before
            assert store.state_list("mac_table") == {}  # learning is shown, not written
    finally:
        store.close()


def test_trace_errors(api: TestClient) -> None:
    bridge = api.post("/v1/bridges", json={}).json()
    port = api.post("/v1/ports", json={"device_id": bridge["id"]}).json()
    missing = api.post(
        "/v1/traces", json={"ingress_port_id": "nope", "packet": {"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2"}}
    )
    assert missing.status_code == 404 and "ingress_port_id" in missing.json()["message"]
    bad = api.post("/v1/traces", json={"ingress_port_id": port["id"], "packet": {"ip_src": "10.0.0.1"}})
    assert bad.status_code == 422 and "ip_dst" in bad.json()["message"]
    proto = api.post(
        "/v1/traces",
        json={"ingress_port_id": port["id"], "packet": {"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "proto": 999}},
    )
    assert proto.status_code == 422
    flood = api.post(
        "/v1/traces",
        json={
            "ingress_port_id": port["id"],
            "packet": {"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "proto": "udp", "dst_port": 53},
        },
    )
    assert flood.status_code == 200 and flood.json()["result"]["action"] == "drop"  # no other port to flood to
    assert flood.json()["result"]["reason"] == "no_flood_targets"


def test_a_trace_follows_bgp_learned_routes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = SqliteStore(tmp_path / "kumo.db")
    try:
        with ApiServer(store) as api, Client(api.url) as client:
            router = client.routers.create(asn=65100)["id"]
            inside = client.ports.create(device_id=router, port_address="10.0.1.1", network_cidr="10.0.1.0/24")
            uplink = client.ports.create(device_id=router, port_address="192.0.2.2", network_cidr="192.0.2.0/24")
            packet = {"ip_src": "10.0.1.11", "ip_dst": "203.0.113.10", "proto": "tcp", "dst_port": 80}
            assert not any(s["what"].startswith("route ") for s in client.trace(inside["id"], packet)["steps"])
            session = store.open_session()
            route = {"id": "bgp-x", "router_id": router, "dst_cidr": "203.0.113.0/24", "src_cidr": "0.0.0.0/0",
                     "next_hop_port_id": uplink["id"], "next_hop_gateway": "192.0.2.1", "weight": 100,
                     "type": "normal"}  # fmt: skip
            put_learned_route(store, session, route)
            steps = [s["what"] for s in client.trace(inside["id"], packet)["steps"]]
            assert f"route bgp-x to 203.0.113.0/24 via {uplink['id']}" in steps, steps
            assert "next hop 192.0.2.1 unknown: ARP, wait" in steps  # (no ARP answer learned: the packet waits)
            session.close()
    finally:
        store.close()
