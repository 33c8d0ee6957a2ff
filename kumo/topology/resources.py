"""The registry of resources: one declaration per kind drives the service, the REST API, the client and
the CLI. A kind declares its model, where it nests, what it references and what happens to those
references when the target is deleted (cascade, restrict = 409, nullify).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, create_model

from kumo.topology import models as m
from kumo.topology.fields import Id, Strict

OnDelete = Literal["cascade", "restrict", "nullify"]


@dataclass(frozen=True)
class Ref:
    field: str
    kinds: tuple[str, ...]
    on_delete: OnDelete
    many: bool = False
    must_exist: bool = True  # False: the target may appear later (a host whose agent has not started)

    def values(self, obj: dict[str, Any]) -> list[str]:
        value = obj.get(self.field)
        if value is None:
            return []
        return list(value) if self.many else [value]


@dataclass(frozen=True)
class Spec:
    kind: str  # store kind and collection name, e.g. "dhcp_subnets"
    model: type[m.Resource]
    singular: str  # for messages and the CLI: "DHCP subnet"
    refs: tuple[Ref, ...] = ()
    read_only: frozenset[str] = frozenset()
    immutable: frozenset[str] = frozenset()
    parent: str | None = None  # nested under this kind's items in the REST API
    parent_field: str | None = None
    segment: str | None = None  # path segment when nested (defaults to kind)
    creatable: bool = True
    updatable: bool = True
    generic_api: bool = True  # False: the API serves it with endpoints of its own
    claims: Callable[[dict[str, Any]], dict[str, str]] = field(default=lambda obj: {})
    columns: tuple[str, ...] = ("id", "name")

    @property
    def path_segment(self) -> str:
        return self.segment or self.kind

    def writable_on_create(self) -> list[str]:
        return [f for f in self.model.model_fields if f not in self.read_only and f != self.parent_field]

    def writable_on_update(self) -> list[str]:
        return [f for f in self.writable_on_create() if f not in self.immutable and f != "id"]

    def create_model(self) -> type[BaseModel]:
        return _derived_model(self, f"{self.model.__name__}Create", self.writable_on_create(), optional=False)

    def update_model(self) -> type[BaseModel]:
        return _derived_model(self, f"{self.model.__name__}Update", self.writable_on_update(), optional=True)


def _derived_model(spec: Spec, name: str, fields: list[str], *, optional: bool) -> type[BaseModel]:
    """A request body model: the writable fields with their types and constraints."""
    definitions: dict[str, Any] = {}
    for fname in fields:
        info = spec.model.model_fields[fname]
        annotated: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        if fname == "id":
            definitions[fname] = (Id | None, None)
        elif optional:
            definitions[fname] = (annotated | None, None)
        elif info.is_required():
            definitions[fname] = (annotated, ...)
        else:
            definitions[fname] = (annotated, info.default)
    model: type[BaseModel] = create_model(name, __base__=Strict, **definitions)
    return model


FILTER_REFS = (
    Ref("inbound_filter_id", ("chains",), "restrict"),
    Ref("outbound_filter_id", ("chains",), "restrict"),
)
DEVICES = ("bridges", "routers")


def _port_claims(p: dict[str, Any]) -> dict[str, str]:
    claims = {}
    if p.get("tunnel_key") is not None:
        claims[f"tunnel_key:{p['tunnel_key']}"] = f"tunnel_key {p['tunnel_key']} is in use by another port"
    if p.get("host_id") and p.get("interface_name"):
        claims[f"binding:{p['host_id']}/{p['interface_name']}"] = (
            f"interface {p['interface_name']} on host {p['host_id']} is already bound to another port; "
            "unbind that port first"
        )
    if p.get("port_mac"):
        claims[f"mac:{p['port_mac']}"] = (
            f"port_mac {p['port_mac']} is in use by another router port; omit it to get a unique one"
        )
    return claims


SPECS: dict[str, Spec] = {
    s.kind: s
    for s in [
        Spec("bridges", m.Bridge, "bridge", FILTER_REFS, columns=("id", "name", "tenant_id", "admin_state_up")),
        Spec(
            "routers",
            m.Router,
            "router",
            FILTER_REFS,
            columns=("id", "name", "tenant_id", "admin_state_up", "asn"),
        ),
        Spec(
            "ports",
            m.Port,
            "port",
            (
                Ref("device_id", DEVICES, "cascade"),
                *FILTER_REFS,
                Ref("port_group_ids", ("port_groups",), "nullify", many=True),
                Ref("peer_id", ("ports",), "nullify"),
            ),
            read_only=frozenset({"type", "tunnel_key", "peer_id"}),
            immutable=frozenset({"device_id"}),
            claims=_port_claims,
            columns=(
                "id",
                "name",
                "type",
                "device_id",
                "tunnel_key",
                "port_address",
                "peer_id",
                "host_id",
                "interface_name",
            ),
        ),
        Spec(
            "routes",
            m.Route,
            "route",
            (Ref("router_id", ("routers",), "cascade"), Ref("next_hop_port_id", ("ports",), "cascade")),
            read_only=frozenset({"learned"}),
            immutable=frozenset({"router_id"}),
            parent="routers",
            parent_field="router_id",
            columns=(
                "id",
                "dst_cidr",
                "src_cidr",
                "type",
                "next_hop_port_id",
                "next_hop_gateway",
                "weight",
                "learned",
            ),
        ),
        Spec(
            "chains",
            m.Chain,
            "chain",
            read_only=frozenset({"rule_ids"}),
            columns=("id", "name", "tenant_id", "rule_ids"),
        ),
        Spec(
            "rules",
            m.Rule,
            "rule",
            (
                Ref("chain_id", ("chains",), "cascade"),
                Ref("jump_chain_id", ("chains",), "restrict"),
                Ref("in_port_ids", ("ports",), "restrict", many=True),
                Ref("out_port_ids", ("ports",), "restrict", many=True),
                Ref("port_group_id", ("port_groups",), "restrict"),
                Ref("ip_addr_group_src", ("ip_addr_groups",), "restrict"),
                Ref("ip_addr_group_dst", ("ip_addr_groups",), "restrict"),
                Ref("traversed_device", DEVICES, "restrict"),
            ),
            immutable=frozenset({"chain_id"}),
            parent="chains",
            parent_field="chain_id",
            columns=("id", "position", "type", "nw_proto", "nw_src", "nw_dst", "tp_dst", "jump_chain_id"),
        ),
        Spec("port_groups", m.PortGroup, "port group", columns=("id", "name", "tenant_id", "stateful")),
        Spec("ip_addr_groups", m.IpAddrGroup, "IP address group", columns=("id", "name", "addresses")),
        Spec(
            "hosts",
            m.Host,
            "host",
            read_only=frozenset({"alive", "interfaces", "addresses", "name"}),
            creatable=False,
            updatable=False,
            columns=("id", "name", "alive", "addresses"),
        ),
        Spec("tunnel_zones", m.TunnelZone, "tunnel zone", columns=("id", "name", "type")),
        Spec(
            "tunnel_zone_members",
            m.TunnelZoneMember,
            "tunnel zone member",
            (
                Ref("tunnel_zone_id", ("tunnel_zones",), "cascade"),
                Ref("host_id", ("hosts",), "cascade", must_exist=False),
            ),
            immutable=frozenset({"tunnel_zone_id", "host_id"}),
            parent="tunnel_zones",
            parent_field="tunnel_zone_id",
            segment="members",
            generic_api=False,
            claims=lambda t: {
                f"tunnel_ip:{t['tunnel_zone_id']}/{t['ip_address']}": (
                    f"ip_address {t['ip_address']} is already the tunnel address of another member of this zone"
                )
            },
            columns=("host_id", "ip_address", "tunnel_zone_id"),
        ),
        Spec(
            "dhcp_subnets",
            m.DhcpSubnet,
            "DHCP subnet",
            (Ref("bridge_id", ("bridges",), "cascade"),),
            immutable=frozenset({"bridge_id"}),
            parent="bridges",
            parent_field="bridge_id",
            columns=("id", "cidr", "gateway", "server_address", "mtu", "enabled"),
        ),
        Spec(
            "dhcp_hosts",
            m.DhcpHost,
            "DHCP host",
            (Ref("subnet_id", ("dhcp_subnets",), "cascade"),),
            read_only=frozenset({"bridge_id"}),
            immutable=frozenset({"subnet_id"}),
            parent="dhcp_subnets",
            parent_field="subnet_id",
            segment="hosts",
            claims=lambda h: {
                f"dhcp_mac:{h['subnet_id']}/{h['mac']}": f"mac {h['mac']} already has a host entry in this subnet",
                f"dhcp_ip:{h['subnet_id']}/{h['ip_address']}": (
                    f"ip_address {h['ip_address']} is already given to another host entry in this subnet"
                ),
            },
            columns=("id", "name", "mac", "ip_address"),
        ),
        Spec(
            "load_balancers",
            m.LoadBalancer,
            "load balancer",
            (Ref("router_id", ("routers",), "cascade"),),
            immutable=frozenset({"router_id"}),
            columns=("id", "name", "router_id", "admin_state_up"),
        ),
        Spec(
            "health_monitors",
            m.HealthMonitor,
            "health monitor",
            columns=("id", "name", "type", "delay", "timeout", "max_retries", "max_retries_down", "admin_state_up"),
        ),
        Spec(
            "pools",
            m.Pool,
            "pool",
            (
                Ref("load_balancer_id", ("load_balancers",), "cascade"),
                Ref("health_monitor_id", ("health_monitors",), "restrict"),
            ),
            immutable=frozenset({"load_balancer_id"}),
            columns=("id", "name", "load_balancer_id", "protocol", "lb_method", "health_monitor_id"),
        ),
        Spec(
            "pool_members",
            m.PoolMember,
            "pool member",
            (Ref("pool_id", ("pools",), "cascade"),),
            read_only=frozenset({"status", "status_detail"}),
            immutable=frozenset({"pool_id"}),
            claims=lambda pm: {
                f"member:{pm['pool_id']}/{pm['address']}:{pm['protocol_port']}": (
                    f"{pm['address']}:{pm['protocol_port']} is already a member of this pool"
                )
            },
            columns=("id", "pool_id", "address", "protocol_port", "weight", "status"),
        ),
        Spec(
            "vips",
            m.Vip,
            "VIP",
            (Ref("pool_id", ("pools",), "cascade"),),
            immutable=frozenset({"pool_id"}),
            columns=("id", "name", "pool_id", "address", "protocol_port", "session_persistence"),
        ),
        Spec(
            "bgp_peers",
            m.BgpPeer,
            "BGP peer",
            (Ref("router_id", ("routers",), "cascade"),),
            read_only=frozenset(
                {"state", "host_id", "uptime_s", "prefixes_received", "prefixes_advertised", "last_error", "flaps"}
            ),
            immutable=frozenset({"router_id"}),
            parent="routers",
            parent_field="router_id",
            claims=lambda b: {
                f"bgp_peer:{b['router_id']}/{b['address']}": f"this router already has a BGP peer at {b['address']}"
            },
            columns=("id", "address", "asn", "hold_time", "state", "uptime_s", "prefixes_received", "last_error"),
        ),
        Spec(
            "bgp_networks",
            m.BgpNetwork,
            "BGP network",
            (Ref("router_id", ("routers",), "cascade"),),
            immutable=frozenset({"router_id"}),
            parent="routers",
            parent_field="router_id",
            columns=("id", "cidr"),
        ),
    ]
}

CLAIMS_KIND = "claims"  # uniqueness guards: creating an existing claim fails inside the same transaction


def path_params(spec: Spec) -> list[tuple[str, Spec]]:
    """The (parameter, parent spec) pairs of a nested kind's collection path, outermost first:
    dhcp_hosts -> [("bridge_id", bridges), ("subnet_id", dhcp_subnets)]."""
    if spec.parent is None or spec.parent_field is None:
        return []
    parent = SPECS[spec.parent]
    return [*path_params(parent), (spec.parent_field, parent)]


def incoming_refs(kind: str) -> list[tuple[Spec, Ref]]:
    """Every (spec, ref) that can point at an object of `kind`."""
    return [(s, r) for s in SPECS.values() for r in s.refs if kind in r.kinds]
