"""What the simulation may look at, behind small interfaces (STYLE 3): the declared topology (a compiled,
read-only snapshot), the learned tables (MAC, ARP) and the flow state (conntrack, NAT bindings).

`Snapshot` compiles the store's JSON objects once: routes sorted for longest-prefix match, address maps,
ARP-suppression entries, rule predicates (see chains.py) are built ahead so that a simulation only looks up.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Protocol

from kumo.packet import ip_to_int
from kumo.packet.flowhash import path_key
from kumo.packet.ipv4 import PROTO_TCP, PROTO_UDP
from kumo.simulation.portaddresses import PortSecurity
from kumo.topology.lbstatus import MEMBER_STATUS, monitors_of
from kumo.topology.state import HOSTS_ALIVE, learned_routes

Obj = dict[str, Any]


def cidr_to_int(cidr: str) -> tuple[int, int]:
    """(network as int, prefix length)."""
    net = ipaddress.IPv4Network(cidr)
    return int(net.network_address), net.prefixlen


def prefix_mask(length: int) -> int:
    return (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF if length else 0


@dataclass(slots=True)
class Route:
    id: str
    dst: int
    dst_len: int
    src: int
    src_len: int
    next_hop_port_id: str | None
    next_hop_gateway: int | None
    weight: int
    type: str
    dst_mask: int = 0  # the netmasks of dst_len and src_len, computed once
    src_mask: int = 0
    path: int = 0  # the next hop's key for ECMP (flowhash.rendezvous): equal routes to one next hop are one path

    def __post_init__(self) -> None:
        self.dst_mask, self.src_mask = prefix_mask(self.dst_len), prefix_mask(self.src_len)
        self.path = path_key(f"{self.next_hop_port_id}/{self.next_hop_gateway}")

    @classmethod
    def from_obj(cls, route: Obj) -> Route:
        dst, dst_len = cidr_to_int(route["dst_cidr"])
        src, src_len = cidr_to_int(route.get("src_cidr") or "0.0.0.0/0")
        gateway = route.get("next_hop_gateway")
        return cls(
            route["id"],
            dst,
            dst_len,
            src,
            src_len,
            route.get("next_hop_port_id"),
            ip_to_int(gateway) if gateway else None,
            int(route.get("weight", 100)),
            route.get("type", "normal"),
        )


class PortView(dict[str, Any]):
    """A port's JSON object plus what the walk reads on every packet, computed once per snapshot (attribute
    reads are the hot path's; the dict stays for everything else)."""

    __slots__ = ("inbound", "outbound", "peer", "security", "tag", "up", "vlan")

    def __init__(self, obj: Obj) -> None:
        super().__init__(obj)
        self.tag = f"port:{obj['id']}"
        self.security: PortSecurity | None = PortSecurity.of(obj) if obj.get("type") == "bridge" else None
        self.up: bool = obj.get("admin_state_up", True)
        self.inbound: str | None = obj.get("inbound_filter_id")
        self.outbound: str | None = obj.get("outbound_filter_id")
        self.vlan: int | None = obj.get("vlan_id")
        self.peer: PortView | None = None  # the linked port, set once every port is known


class DeviceView(dict[str, Any]):
    """A bridge's or router's JSON object plus its hot-path fields (see PortView)."""

    __slots__ = ("inbound", "outbound", "tag", "up")

    def __init__(self, obj: Obj) -> None:
        super().__init__(obj)
        self.tag = f"device:{obj['id']}"
        self.up: bool = obj.get("admin_state_up", True)
        self.inbound: str | None = obj.get("inbound_filter_id")
        self.outbound: str | None = obj.get("outbound_filter_id")


@dataclass(slots=True, frozen=True)
class NatTarget:
    """A NAT rule's target range, as integers. Ports 0/0: keep the packet's own port (address-only NAT)."""

    first: int
    last: int
    port_from: int
    port_to: int

    @classmethod
    def from_obj(cls, target: Obj) -> NatTarget:
        return cls(
            ip_to_int(target["address_from"]),
            ip_to_int(target["address_to"]),
            target.get("port_from") or 0,
            target.get("port_to") or 0,
        )


@dataclass(slots=True)
class Vip:
    id: str
    address: int
    port: int
    persistence: bool
    members: list[tuple[str, int, int, int]]  # (member id, address, port, weight) of usable members
    pool_id: str
    method: str
    protocol: int  # IP protocol of its pool (TCP or UDP)
    member_keys: tuple[int, ...] = ()  # the members' rendezvous keys (kumo.packet.flowhash.path_key of the id)
    member_weights: tuple[int, ...] = ()


@dataclass(slots=True)
class Snapshot:
    """The declared topology, compiled for lookups. Build with `Snapshot.build(objects_by_kind)`."""

    ports: dict[str, PortView] = field(default_factory=dict)
    devices: dict[str, tuple[str, DeviceView]] = field(default_factory=dict)  # id -> ("bridge"|"router", obj)
    device_ports: dict[str, list[PortView]] = field(default_factory=dict)
    chains: dict[str, Obj] = field(default_factory=dict)
    rules: dict[str, Obj] = field(default_factory=dict)
    routes: dict[str, list[Route]] = field(default_factory=dict)  # router -> routes, longest prefix first
    port_groups: dict[str, frozenset[str]] = field(default_factory=dict)
    ip_groups: dict[str, frozenset[int]] = field(default_factory=dict)
    arp_suppression: dict[str, dict[int, str]] = field(default_factory=dict)  # bridge -> ip -> mac
    router_macs: dict[str, dict[str, str]] = field(default_factory=dict)  # bridge -> router-port mac -> bridge port
    dhcp: dict[str, dict[str, tuple[Obj, Obj]]] = field(default_factory=dict)  # bridge -> mac -> (subnet, host)
    vips: dict[str, list[Vip]] = field(default_factory=dict)  # router -> VIPs
    pool_members: dict[tuple[str, int, int], str] = field(default_factory=dict)  # (pool, ip, port) -> member id
    member_addresses: dict[str, frozenset[int]] = field(default_factory=dict)  # router -> its VIPs' members' IPs
    compiled_chains: dict[str, Any] = field(default_factory=dict)  # filled lazily by chains.compiled_chain
    stateful_devices: frozenset[str] | None = None  # filled lazily by walk.stateful_devices
    dead_hosts: frozenset[str] = frozenset()  # registered hosts whose agent's session is gone

    @classmethod
    def build(cls, objects: dict[str, list[Obj]]) -> Snapshot:
        snap = cls()
        for kind, dtype in (("bridges", "bridge"), ("routers", "router")):
            for obj in objects.get(kind, []):
                snap.devices[obj["id"]] = (dtype, DeviceView(obj))
                snap.device_ports[obj["id"]] = []
        for obj in objects.get("ports", []):
            port = PortView(obj)
            snap.ports[port["id"]] = port
            snap.device_ports.setdefault(port["device_id"], []).append(port)
        for port in snap.ports.values():
            port.peer = snap.ports.get(port.get("peer_id") or "")
        snap.chains = {c["id"]: c for c in objects.get("chains", [])}
        snap.rules = {r["id"]: r for r in objects.get("rules", [])}
        alive = objects.get(ALIVE)  # None: liveness unknown (unit tests), every route stands
        if alive is not None:
            snap.dead_hosts = frozenset(h["id"] for h in objects.get("hosts", [])) - {a["id"] for a in alive}
        by_router: dict[str, list[Route]] = {}
        for route in objects.get("routes", []):
            if snap.dead_hosts and snap.through_dead_host(route.get("next_hop_port_id")):
                continue  # withdrawn while the host of its exterior next-hop port is dead
            by_router.setdefault(route["router_id"], []).append(Route.from_obj(route))
        for routes in by_router.values():
            routes.sort(key=lambda r: (-r.dst_len, -r.src_len, r.weight, r.id))
        snap.routes = by_router
        members: dict[str, set[str]] = {}
        for port in snap.ports.values():
            for group in port.get("port_group_ids") or []:
                members.setdefault(group, set()).add(port["id"])
        snap.port_groups = {g: frozenset(m) for g, m in members.items()}
        snap.ip_groups = {
            g["id"]: frozenset(ip_to_int(a) for a in g.get("addresses", [])) for g in objects.get("ip_addr_groups", [])
        }
        # A bridge knows the router ports linked to it (ARP suppression, unicast to the router by MAC).
        for port in snap.ports.values():
            peer = snap.ports.get(port.get("peer_id") or "")
            if port["type"] == "bridge" and peer is not None and peer["type"] == "router":
                bridge = port["device_id"]
                snap.arp_suppression.setdefault(bridge, {})[ip_to_int(peer["port_address"])] = peer["port_mac"]
                snap.router_macs.setdefault(bridge, {})[peer["port_mac"]] = port["id"]
        subnets = {s["id"]: s for s in objects.get("dhcp_subnets", [])}
        for host in objects.get("dhcp_hosts", []):
            subnet = subnets.get(host["subnet_id"])
            if subnet is None or not subnet.get("enabled", True):
                continue
            snap.dhcp.setdefault(subnet["bridge_id"], {})[host["mac"]] = (subnet, host)
            snap.arp_suppression.setdefault(subnet["bridge_id"], {}).setdefault(
                ip_to_int(host["ip_address"]), host["mac"]
            )
        snap.vips, snap.pool_members = _compile_vips(objects)
        snap.member_addresses = _member_addresses(objects)
        return snap

    # --- lookups the stages use -----------------------------------------------------------------------
    def through_dead_host(self, port_id: str | None) -> bool:
        """Whether `port_id` is an exterior port bound to a dead host (its routes are withdrawn)."""
        port = self.ports.get(port_id or "")
        return port is not None and port.peer is None and port.get("host_id") in self.dead_hosts

    def exterior_ports(self, device_id: str) -> list[PortView]:
        return [p for p in self.device_ports.get(device_id, []) if p.get("peer_id") is None]

    def router_port_for_ip(self, router_id: str, ip: int) -> PortView | None:
        for port in self.device_ports.get(router_id, []):
            if port.get("port_address") and ip_to_int(port["port_address"]) == ip:
                return port
        return None


def _compile_vips(objects: dict[str, list[Obj]]) -> tuple[dict[str, list[Vip]], dict[tuple[str, int, int], str]]:
    """The VIPs of each router, with their usable members; and every member's id by (pool, address, port)."""
    lbs = {lb["id"]: lb for lb in objects.get("load_balancers", []) if lb.get("admin_state_up", True)}
    pools = {p["id"]: p for p in objects.get("pools", []) if p.get("load_balancer_id") in lbs}
    monitored = monitors_of(pools.values(), {m["id"]: m for m in objects.get("health_monitors", [])})
    down = {row["id"] for row in objects.get(MEMBER_STATUS, []) if row.get("status") == "down"}
    usable: dict[str, list[tuple[str, int, int, int]]] = {}
    ids: dict[tuple[str, int, int], str] = {}
    for member in objects.get("pool_members", []):
        ids[(member["pool_id"], ip_to_int(member["address"]), member["protocol_port"])] = member["id"]
        if member["id"] in down and member.get("pool_id") in monitored:
            continue  # its pool's monitor found it down (kumo.topology.lbstatus)
        if member.get("admin_state_up", True) and member.get("weight", 1) > 0:
            usable.setdefault(member["pool_id"], []).append(
                (member["id"], ip_to_int(member["address"]), member["protocol_port"], member.get("weight", 1))
            )
    vips: dict[str, list[Vip]] = {}
    for vip in objects.get("vips", []):
        pool = pools.get(vip["pool_id"])
        if pool is None or not vip.get("admin_state_up", True):
            continue
        router = lbs[pool["load_balancer_id"]]["router_id"]
        members = sorted(usable.get(pool["id"], [])) if pool.get("admin_state_up", True) else []
        method = pool.get("lb_method", "round_robin")
        vips.setdefault(router, []).append(
            Vip(
                vip["id"],
                ip_to_int(vip["address"]),
                vip["protocol_port"],
                vip.get("session_persistence") == "source_ip" or method == "source_ip",
                members,
                pool["id"],
                method,
                PROTO_UDP if pool.get("protocol") == "udp" else PROTO_TCP,
                tuple(path_key(member_id) for member_id, *_ in members),
                tuple(weight for *_, weight in members),
            )
        )
    return vips, ids


def _member_addresses(objects: dict[str, list[Obj]]) -> dict[str, frozenset[int]]:
    """router -> the addresses of every member of its load balancers' pools (up or not: a down member's
    established connections still have their replies reverse-DNATed)."""
    router_of_lb = {lb["id"]: lb["router_id"] for lb in objects.get("load_balancers", [])}
    router_of_pool = {p["id"]: router_of_lb.get(p.get("load_balancer_id")) for p in objects.get("pools", [])}
    out: dict[str, set[int]] = {}
    for member in objects.get("pool_members", []):
        router = router_of_pool.get(member["pool_id"])
        if router is not None:
            out.setdefault(router, set()).add(ip_to_int(member["address"]))
    return {router: frozenset(addresses) for router, addresses in out.items()}


class LearnedTables(Protocol):
    """MAC and ARP tables (state tables in the store; the agent keeps a cache)."""

    def mac_port(self, bridge_id: str, mac: str, vlan: int | None) -> str | None: ...

    def arp_mac(self, router_id: str, ip: int) -> str | None: ...


class FlowState(Protocol):
    """Conntrack keys and NAT bindings (local tables, or Redis shared across hosts)."""

    def conntrack_has(self, key: tuple[Any, ...]) -> bool: ...

    def nat_get(self, key: tuple[Any, ...]) -> tuple[Any, ...] | None: ...

    def snat_allocate(
        self, router_id: str, targets: list[NatTarget], flow: tuple[Any, ...]
    ) -> tuple[int, int] | None: ...


@dataclass
class MemoryLearned:
    """In-memory MAC/ARP tables: tests, traces, and the embedded agent."""

    macs: dict[tuple[str, str, int | None], str] = field(default_factory=dict)
    arps: dict[tuple[str, int], str] = field(default_factory=dict)

    def mac_port(self, bridge_id: str, mac: str, vlan: int | None) -> str | None:
        return self.macs.get((bridge_id, mac, vlan))

    def arp_mac(self, router_id: str, ip: int) -> str | None:
        return self.arps.get((router_id, ip))


ALIVE = "_alive"  # the objects' pseudo-kind listing live hosts ({"id": ...}; the HOSTS_ALIVE state table)

SNAPSHOT_KINDS = (
    "hosts",
    "bridges",
    "routers",
    "ports",
    "routes",
    "chains",
    "rules",
    "port_groups",
    "ip_addr_groups",
    "dhcp_subnets",
    "dhcp_hosts",
    "load_balancers",
    "pools",
    "pool_members",
    "vips",
    "health_monitors",
)


def snapshot_of(store: Any) -> Snapshot:
    """A snapshot of everything a simulation reads, from a Store (or anything with `list(kind)`)."""
    objects = {kind: store.list(kind) for kind in SNAPSHOT_KINDS}
    if hasattr(store, "state_list"):
        objects[ALIVE] = [{"id": host} for host in store.state_list(HOSTS_ALIVE)]
        objects["routes"] = objects["routes"] + learned_routes(store)  # BGP's, as the agents read them
        objects[MEMBER_STATUS] = [{**row, "id": key} for key, row in store.state_list(MEMBER_STATUS).items()]
    return Snapshot.build(objects)
