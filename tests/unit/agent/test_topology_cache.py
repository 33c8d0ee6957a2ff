"""The agent's topology cache folds BGP-learned routes into the routes the simulation reads."""

from __future__ import annotations

from kumo.agent.topology import TopologyCache
from kumo.topology.state import LEARNED_ROUTES, learned_route_key
from kumo.topology.store.base import StateChange


def test_learned_routes_come_and_go_with_their_state_entries() -> None:
    cache = TopologyCache()
    route = {"id": "bgp-1", "router_id": "r1", "dst_cidr": "203.0.113.0/24", "next_hop_port_id": "up1",
             "next_hop_gateway": "192.0.2.1", "weight": 100, "type": "normal"}  # fmt: skip
    key = learned_route_key("r1", "bgp-1")
    assert cache.apply_learned_route(StateChange(LEARNED_ROUTES, key, None, route)) == "routes:r1"
    assert [r["id"] for r in cache.snapshot_objects()["routes"]] == ["bgp-1"]
    assert cache.apply_learned_route(StateChange(LEARNED_ROUTES, key, route, None)) == "routes:r1"
    assert cache.snapshot_objects()["routes"] == []
    # a delete the cache never saw the creation of still names its router
    assert (
        cache.apply_learned_route(StateChange(LEARNED_ROUTES, learned_route_key("r2", "x"), None, None)) == "routes:r2"
    )
