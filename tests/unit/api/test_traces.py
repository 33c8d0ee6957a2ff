"""POST /v1/traces: the journey of a described packet; nothing is written."""

from __future__ import annotations

from fastapi.testclient import TestClient

from kumo.client import Client
from kumo.demo import build_sample_cloud
from kumo.testing.apiserver import ApiServer
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
