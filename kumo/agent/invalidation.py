"""Which flows a topology change invalidates: the tags the simulation put on results that read the object.

A change this module cannot pin down to tags (groups, load balancers) returns None: every flow goes. That
is always correct, only slower; the kinds are listed in EVERYTHING so the choice is visible.
"""

from __future__ import annotations

from typing import Any

from kumo.topology.store.base import Change

EVERYTHING = frozenset(
    {
        "port_groups",
        "ip_addr_groups",
        "load_balancers",
        "pools",
        "pool_members",
        "vips",
        "health_monitors",
        "dhcp_hosts",
    }
)
IGNORED = frozenset({"hosts", "tunnel_zones", "tunnel_zone_members", "bgp_peers", "tenants"})


def tags_for(change: Change) -> set[str] | None:
    """The tags to invalidate for `change`, or None for all flows."""
    if change.op == "resync" or change.kind in EVERYTHING:
        return None
    if change.kind in IGNORED:
        return set()
    tags: set[str] = set()
    for obj in (change.old, change.new):
        if obj is not None:
            tags |= _object_tags(change.kind, obj)
    return tags


def _object_tags(kind: str, obj: dict[str, Any]) -> set[str]:
    oid = obj.get("id", "")
    if kind in ("bridges", "routers"):
        return {f"device:{oid}"}
    if kind == "ports":
        # a port also shapes its device: flood sets, ARP suppression and router MACs (linked router ports)
        tags = {f"port:{oid}", f"device:{obj.get('device_id')}", f"flood:{obj.get('device_id')}"}
        if obj.get("peer_id"):
            tags.add(f"port:{obj['peer_id']}")
        if obj.get("type") == "router":
            tags.add(f"routes:{obj.get('device_id')}")
        return tags
    if kind == "chains":
        return {f"chain:{oid}"}
    if kind == "rules":
        return {f"chain:{obj.get('chain_id')}"}
    if kind == "routes":
        return {f"routes:{obj.get('router_id')}"}
    if kind == "dhcp_subnets":
        return {f"device:{obj.get('bridge_id')}"}
    return {f"device:{oid}"}
