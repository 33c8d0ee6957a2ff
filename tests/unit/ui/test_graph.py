"""The topology picture (kumo.ui.graph and GET /ui/topology.svg): one SVG node per device, port, host, BGP peer
and pool, found by id and class; links drawn once; user text shown as written; the page open, the drawing
behind the token; a tenant token sees its own objects only."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kumo.api import create_app
from kumo.topology.store.sqlite import SqliteStore
from kumo.topology.tokens import create_token
from kumo.ui import graph
from kumo.ui.graph import GraphvizMissing, svg

SVG = "{http://www.w3.org/2000/svg}"


def nodes(drawing: bytes) -> dict[str, set[str]]:
    """SVG node id -> its classes."""
    root = ET.fromstring(drawing)
    return {
        g.get("id", ""): set(g.get("class", "").split()) for g in root.iter(f"{SVG}g") if "node" in g.get("class", "")
    }


def edges(drawing: bytes) -> list[str]:
    root = ET.fromstring(drawing)
    return [g.findtext(f"{SVG}title") or "" for g in root.iter(f"{SVG}g") if g.get("class") == "edge"]


OBJECTS = {
    "hosts": [{"id": "h1", "name": "compute-1", "alive": True}, {"id": "h2", "alive": False}],
    "bridges": [{"id": "b1", "name": "web"}],
    "routers": [{"id": "r1", "name": "edge", "asn": 65010}],
    "ports": [
        {"id": "p1", "device_id": "b1", "name": "vm<1> \\l", "host_id": "h1", "interface_name": "tap1"},
        {"id": "p2", "device_id": "b1", "name": "to-router", "peer_id": "p3"},
        {"id": "p3", "device_id": "r1", "peer_id": "p2", "port_address": "10.0.1.1", "network_cidr": "10.0.1.0/24"},
    ],
    "bgp_peers": [{"id": "g1", "router_id": "r1", "asn": 65000, "address": "192.0.2.1", "state": "established"}],
    "load_balancers": [{"id": "l1", "router_id": "r1"}],
    "pools": [{"id": "o1", "load_balancer_id": "l1", "protocol": "tcp"}],
    "pool_members": [{"id": "m1", "pool_id": "o1", "address": "10.0.2.11", "protocol_port": 80, "status": "down"}],
    "vips": [{"id": "v1", "pool_id": "o1", "address": "192.0.2.10", "protocol_port": 80}],
}


def test_every_object_is_one_node_with_its_id_and_class() -> None:
    drawn = nodes(svg(OBJECTS, {"p1": {"rx_packets": 1500, "tx_packets": 7, "dropped": 3}}))
    assert drawn == {
        "host-h1": {"node", "kumo-host"},
        "host-h2": {"node", "kumo-host"},
        "device-b1": {"node", "kumo-device", "kumo-bridge"},
        "device-r1": {"node", "kumo-device", "kumo-router"},
        "port-p1": {"node", "kumo-port"},
        "port-p2": {"node", "kumo-port"},
        "port-p3": {"node", "kumo-port"},
        "bgp-g1": {"node", "kumo-bgp"},
        "pool-o1": {"node", "kumo-pool"},
    }


def test_links_are_drawn_once_and_bindings_go_to_their_host() -> None:
    drawn = edges(svg(OBJECTS, {}))
    assert drawn.count("port-p2--port-p3") == 1 and "port-p3--port-p2" not in drawn
    assert "port-p1--host-h1" in drawn and "device-b1--port-p1" in drawn


def test_labels_show_user_text_as_written_with_the_counters() -> None:
    text = " ".join(ET.fromstring(svg(OBJECTS, {"p1": {"rx_packets": 1500, "tx_packets": 7, "dropped": 3}})).itertext())
    assert "vm<1> \\l" in text  # (not a Graphviz escape, not markup)
    assert "rx 1.5k tx 7" in text and "dropped 3" in text
    assert "10.0.2.11:80 w1 down" in text and "VIP 192.0.2.10:80" in text
    assert "compute-1" in text and "DOWN" in text and "established" in text


def test_no_graphviz_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GraphvizMissing, match="apt-get install graphviz"):
        graph.svg(OBJECTS, {})


def test_the_page_is_open_and_the_drawing_needs_a_token(store: SqliteStore) -> None:
    with TestClient(create_app(store, auth=True)) as api:
        for path in ("/ui", "/ui/ui.js", "/ui/ui.css"):
            assert api.get(path).status_code == 200, path
        assert "trace-form" in api.get("/ui").text
        assert api.get("/ui/topology.svg").status_code == 401
        reader = {"Authorization": f"Bearer {create_token(store, 'reader', None)[1]}"}
        answer = api.get("/ui/topology.svg", headers=reader)
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/svg+xml"


def test_a_tenant_sees_its_own_devices_only(store: SqliteStore) -> None:
    with TestClient(create_app(store, auth=True)) as api:
        admin = {"Authorization": f"Bearer {create_token(store, 'admin', None)[1]}"}
        mine = api.post("/v1/bridges", json={"name": "mine", "tenant_id": "t1"}, headers=admin).json()
        theirs = api.post("/v1/bridges", json={"name": "theirs", "tenant_id": "t2"}, headers=admin).json()
        port = api.post("/v1/ports", json={"device_id": mine["id"]}, headers=admin).json()
        tenant = {"Authorization": f"Bearer {create_token(store, 'tenant', 't1')[1]}"}
        drawn = nodes(api.get("/ui/topology.svg", headers=tenant).content)
        assert f"device-{mine['id']}" in drawn and f"port-{port['id']}" in drawn
        assert f"device-{theirs['id']}" not in drawn
        assert set(nodes(api.get("/ui/topology.svg", headers=admin).content)) >= {f"device-{theirs['id']}"}
