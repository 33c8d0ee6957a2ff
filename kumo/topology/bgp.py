"""BGP peers as the API shows them: which router port is a peer's uplink, and the live session state the
agent running it writes to the bgp_peer_state table (owned by its store session: it vanishes with the
agent). A peer no agent runs says why (API.md: "no_uplink" and the like)."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from typing import Any

from kumo.topology.state import HOSTS_ALIVE
from kumo.topology.store.base import Obj, Store

BGP_PEER_STATE = "bgp_peer_state"
SESSION_FIELDS = ("host_id", "uptime_s", "prefixes_received", "prefixes_advertised", "last_error", "flaps")


def uplink_for(address: str, ports: Iterable[Obj]) -> Obj | None:
    """The router port whose network holds `address` (the most specific one), or None."""
    peer = ipaddress.IPv4Address(address)
    best: tuple[int, Obj] | None = None
    for port in ports:
        cidr = port.get("network_cidr")
        if not cidr or port.get("port_address") == address:
            continue
        network = ipaddress.IPv4Network(cidr)
        if peer in network and (best is None or network.prefixlen > best[0]):
            best = (network.prefixlen, port)
    return None if best is None else best[1]


def session_fields(row: dict[str, Any] | None, now: float | None = None) -> dict[str, Any]:
    """The read-only session fields of a peer from its state row (None: no agent runs it)."""
    if row is None:
        return dict.fromkeys(SESSION_FIELDS) | {"prefixes_received": 0, "prefixes_advertised": 0, "flaps": 0}
    established = row.get("established_at")
    uptime = round((now or time.time()) - established, 1) if established else None
    return {**{f: row.get(f) for f in SESSION_FIELDS}, "uptime_s": uptime}


def peer_view(store: Store, peer: Obj) -> Obj:
    """`peer` with its live state, or the reason no session runs: no_uplink (no port of the router holds
    its address), uplink_unbound, host_down (the uplink's host has no live agent), or idle (its agent has
    not reported it yet)."""
    row = store.state_get(BGP_PEER_STATE, peer["id"])
    out = {**peer, **session_fields(row)}
    if row is not None:
        out["state"] = row["state"]
        return out
    uplink = uplink_for(peer["address"], store.list("ports", device_id=peer["router_id"]))
    if uplink is None:
        out["state"] = "no_uplink"
    elif not uplink.get("host_id") or not uplink.get("interface_name"):
        out["state"] = "uplink_unbound"
    elif store.state_get(HOSTS_ALIVE, uplink["host_id"]) is None:
        out["state"] = "host_down"
    else:
        out["state"] = "idle"
    return out
