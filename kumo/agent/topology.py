"""The agent's copy of the declared topology, fed by the store's change stream.

A change carries the object's new value, so the agent folds it in and rebuilds its snapshot without reading
the store again: on ZooKeeper a re-read of every kind costs a round trip per object, on the packet thread.
The store is read whole only at start and on a `resync` (a watcher that fell behind the change log).
"""

from __future__ import annotations

from typing import Any

from kumo.packet import ip_to_int
from kumo.simulation.view import ALIVE, SNAPSHOT_KINDS, Snapshot
from kumo.topology.lbstatus import MEMBER_STATUS
from kumo.topology.state import HOSTS_ALIVE, LEARNED_ROUTES, parse_learned_route_key
from kumo.topology.store.base import Change, StateChange, Store

KINDS = (*SNAPSHOT_KINDS, "tunnel_zones", "tunnel_zone_members", "bgp_peers", "bgp_networks")


class TopologyCache:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
        self.alive: set[str] = set()
        self.learned_routes: dict[str, dict[str, Any]] = {}  # BGP-learned (kumo.edge), by state-table key
        self.member_status: dict[str, dict[str, Any]] = {}  # pool members' health (kumo.topology.lbstatus)

    def load(self, store: Store) -> None:
        self.objects = {kind: {o["id"]: o for o in store.list(kind)} for kind in KINDS}
        self.alive = set(store.state_list(HOSTS_ALIVE))
        self.learned_routes = {k: {**r, "learned": True} for k, r in store.state_list(LEARNED_ROUTES).items()}
        self.member_status = {k: {**row, "id": k} for k, row in store.state_list(MEMBER_STATUS).items()}

    def apply_member_status(self, change: StateChange) -> str | None:
        """Fold a member's health in; the tag of its pool's flows (None: nothing a flow read changed)."""
        old = self.member_status.get(change.key)
        if change.new is None:
            self.member_status.pop(change.key, None)
        else:
            self.member_status[change.key] = {**change.new, "id": change.key}
        if (old or {}).get("status") == (change.new or {}).get("status"):
            return None  # (its detail or time only)
        pool_id = (change.new or old or {}).get("pool_id")
        return f"pool:{pool_id}"

    def apply_learned_route(self, change: StateChange) -> str:
        """Fold a learned route's change in; the tag of its router's routes."""
        if change.new is None:
            old = self.learned_routes.pop(change.key, None)
            router_id = old["router_id"] if old else parse_learned_route_key(change.key)[0]
        else:
            self.learned_routes[change.key] = {**change.new, "learned": True}
            router_id = change.new["router_id"]
        return f"routes:{router_id}"

    def apply(self, change: Change) -> None:
        table = self.objects.get(change.kind)
        if table is None:
            return
        if change.new is None:
            table.pop(change.id, None)
        else:
            table[change.id] = change.new

    def apply_alive(self, change: StateChange) -> bool:
        """Fold a liveness change in; True if the host's state changed."""
        was = change.key in self.alive
        if change.new is None:
            self.alive.discard(change.key)
        else:
            self.alive.add(change.key)
        return was != (change.key in self.alive)

    def snapshot(self) -> Snapshot:
        return Snapshot.build(self.snapshot_objects())

    def snapshot_objects(self) -> dict[str, list[dict[str, Any]]]:
        """What the snapshot is built from: the declared objects, learned routes among the routes."""
        objects: dict[str, list[dict[str, Any]]] = {kind: list(self.objects[kind].values()) for kind in SNAPSHOT_KINDS}
        objects["routes"] += self.learned_routes.values()
        objects[ALIVE] = [{"id": host} for host in self.alive]
        objects[MEMBER_STATUS] = list(self.member_status.values())
        return objects

    def tunnel_peers(self, host_id: str) -> dict[str, int]:
        """host id -> its tunnel IP, for every host sharing a tunnel zone with `host_id` (the first zone in id
        order wins when two zones give a host different addresses)."""
        members = sorted(self.objects["tunnel_zone_members"].values(), key=lambda m: (m["tunnel_zone_id"], m["id"]))
        mine = {m["tunnel_zone_id"] for m in members if m["host_id"] == host_id}
        peers: dict[str, int] = {}
        for member in members:
            if member["tunnel_zone_id"] in mine and member["host_id"] != host_id:
                peers.setdefault(member["host_id"], ip_to_int(member["ip_address"]))
        return peers

    def routers_via(self, host_id: str) -> set[str]:
        """Routers with a port bound to `host_id`: their routes depend on that host's liveness."""
        return {
            p["device_id"]
            for p in self.objects["ports"].values()
            if p.get("host_id") == host_id and p.get("port_address") is not None
        }

    def stateful_hosts(self, snapshot: Snapshot) -> dict[str, set[str]]:
        """port -> the hosts of every port sharing a stateful port group with it (they may see its return
        traffic, so they get its flows' state pushed)."""
        out: dict[str, set[str]] = {}
        for group in self.objects["port_groups"].values():
            if not group.get("stateful"):
                continue
            members = snapshot.port_groups.get(group["id"], frozenset())
            hosts = {h for p in members if p in snapshot.ports and (h := snapshot.ports[p].get("host_id"))}
            for port in members:
                out.setdefault(port, set()).update(hosts)
        return out
