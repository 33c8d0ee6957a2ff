"""A BGP peer's state as the API shows it (kumo.topology.bgp): the agent's row when an agent runs the
session, else why none can — on both store backends."""

from __future__ import annotations

import pytest

from kumo.topology.bgp import BGP_PEER_STATE, uplink_for
from kumo.topology.service import Topology
from kumo.topology.state import register_host
from kumo.topology.store.base import Store


@pytest.fixture
def topo(store: Store) -> Topology:
    return Topology(store)


def test_a_peer_says_why_no_session_runs_until_an_agent_reports_it(topo: Topology) -> None:
    router = topo.create("routers", {"asn": 65100})
    peer = topo.create("bgp_peers", {"router_id": router["id"], "asn": 65001, "address": "192.0.2.1"})
    assert topo.get("bgp_peers", peer["id"])["state"] == "no_uplink"
    uplink = topo.create(
        "ports", {"device_id": router["id"], "port_address": "192.0.2.2", "network_cidr": "192.0.2.0/24"}
    )
    assert topo.get("bgp_peers", peer["id"])["state"] == "uplink_unbound"
    topo.store.create("hosts", "h2", {"id": "h2", "name": None, "addresses": [], "interfaces": [], "alive": False})
    topo.bind(uplink["id"], "h2", "eth9")
    assert topo.get("bgp_peers", peer["id"])["state"] == "host_down"
    session = topo.store.open_session()
    register_host(topo.store, session, "h2")
    assert topo.get("bgp_peers", peer["id"])["state"] == "idle"
    row = {"state": "established", "established_at": 1.0, "host_id": "h2", "prefixes_received": 3,
           "prefixes_advertised": 1, "last_error": None, "flaps": 2}  # fmt: skip
    topo.store.state_put(BGP_PEER_STATE, peer["id"], row, owner=session)
    shown = topo.list("bgp_peers", router_id=router["id"])[0]
    assert shown["state"] == "established" and shown["prefixes_received"] == 3 and shown["flaps"] == 2
    assert shown["host_id"] == "h2" and shown["uptime_s"] > 0
    session.close()


def test_the_uplink_is_the_most_specific_network_holding_the_peer() -> None:
    ports = [
        {"id": "wide", "port_address": "10.0.0.1", "network_cidr": "10.0.0.0/8"},
        {"id": "narrow", "port_address": "10.1.2.1", "network_cidr": "10.1.2.0/24"},
        {"id": "bridge-side"},
    ]
    assert uplink_for("10.1.2.9", ports)["id"] == "narrow"  # type: ignore[index]
    assert uplink_for("10.9.9.9", ports)["id"] == "wide"  # type: ignore[index]
    assert uplink_for("192.0.2.1", ports) is None
    assert uplink_for("10.1.2.1", ports)["id"] == "wide"  # type: ignore[index]  # (its own port's address: not)
