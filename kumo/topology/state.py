"""State tables: learned data that agents write and everyone reads (API.md: mac_table, arp_table, liveness).

Keys are "<device id>/<address>" so one table serves every bridge or router; the helpers here are the only
place that knows the key layout.
"""

from __future__ import annotations

import time
from typing import Any

from kumo.topology.errors import NotFound
from kumo.topology.store.base import Create, Session, Store, Update

MAC_TABLE = "mac_table"
ARP_TABLE = "arp_table"
HOSTS_ALIVE = "hosts_alive"
LEARNED_ROUTES = "learned_routes"


def mac_key(bridge_id: str, mac: str, vlan_id: int | None = None) -> str:
    return f"{bridge_id}/{mac}" if vlan_id is None else f"{bridge_id}/{mac}/{vlan_id}"


def arp_key(router_id: str, ip: str) -> str:
    return f"{router_id}/{ip}"


def parse_mac_key(key: str) -> tuple[str, str, int | None]:
    """(bridge id, mac, vlan id) of a MAC-table key."""
    parts = key.split("/")
    return parts[0], parts[1], int(parts[2]) if len(parts) > 2 else None


def parse_arp_key(key: str) -> tuple[str, str]:
    """(router id, ip) of an ARP-table key."""
    router_id, ip = key.split("/", 1)
    return router_id, ip


def mac_table(store: Store, bridge_id: str) -> list[dict[str, Any]]:
    rows = []
    for key, value in store.state_list(MAC_TABLE).items():
        bridge, mac, vlan = parse_mac_key(key)
        if bridge == bridge_id:
            rows.append({"mac": mac, "vlan_id": vlan, **value})
    return sorted(rows, key=lambda r: (r["mac"], r["vlan_id"] or 0))


def arp_table(store: Store, router_id: str) -> list[dict[str, Any]]:
    rows = []
    for key, value in store.state_list(ARP_TABLE).items():
        device, ip = parse_arp_key(key)
        if device == router_id:
            rows.append({"ip": ip, **value})
    return sorted(rows, key=lambda r: tuple(int(x) for x in r["ip"].split(".")))


def learned_route_key(router_id: str, route_id: str) -> str:
    return f"{router_id}/{route_id}"


def parse_learned_route_key(key: str) -> tuple[str, str]:
    """(router id, route id) of a learned route's key."""
    router_id, route_id = key.split("/", 1)
    return router_id, route_id


def put_learned_route(store: Store, session: Session, route: dict[str, Any]) -> None:
    """A BGP-learned route: read like a declared one (learned=true), gone when the speaker's session ends."""
    store.state_put(LEARNED_ROUTES, learned_route_key(route["router_id"], route["id"]), route, owner=session)


def learned_routes(store: Store) -> list[dict[str, Any]]:
    return [{**route, "learned": True} for route in store.state_list(LEARNED_ROUTES).values()]


def register_host(
    store: Store, session: Session, host_id: str, name: str | None = None, addresses: list[str] | None = None
) -> None:
    """An agent announces its host: the host object is durable, its liveness lives with the session."""
    value = {"id": host_id, "name": name, "addresses": addresses or [], "interfaces": [], "alive": False}
    try:
        current = store.get_versioned("hosts", host_id)
    except NotFound:  # a first start; any other error (an unreachable store) is the caller's to see
        store.transaction([Create("hosts", host_id, value)])
    else:
        value["interfaces"] = current.value.get("interfaces", [])
        store.transaction([Update("hosts", host_id, value, current.version)])
    store.state_put(HOSTS_ALIVE, host_id, {"since": time.time()}, owner=session)
