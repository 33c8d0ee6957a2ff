"""Every resource of API.md as a typed model with its defaults and its own consistency rules.

These models are pure data and validation: rules that need other objects (references, uniqueness,
link compatibility) live in `service.py`, which sees the store.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field, model_validator

from kumo.topology.fields import (
    CIDR,
    MAC,
    Asn,
    Id,
    InterfaceName,
    IPv4,
    L4Port,
    Name,
    PortRange,
    Strict,
    TunnelKey,
    VlanId,
    ip_in,
    is_multicast_mac,
)


class Resource(Strict):
    id: Id


class Filtered(Resource):
    admin_state_up: bool = True
    inbound_filter_id: Id | None = None
    outbound_filter_id: Id | None = None


# --- devices -----------------------------------------------------------------------------------------
class Bridge(Filtered):
    name: Name | None = None
    tenant_id: Name | None = None


class Router(Filtered):
    name: Name | None = None
    tenant_id: Name | None = None
    asn: Asn | None = None
    # advertise its floating IPs (the addresses of static DNAT rules) to its BGP peers as /32s
    bgp_advertise_floating_ips: bool = False


class AddressPair(Strict):
    """Neutron's allowed address pair: another address (or network) a port's VM may send from, e.g. a VRRP
    address it shares with another VM; with its own MAC, or the port's."""

    ip_address: str
    mac_address: MAC | None = None

    @model_validator(mode="after")
    def _address(self) -> AddressPair:
        try:
            ipaddress.IPv4Network(self.ip_address, strict=True)
        except ValueError:
            raise ValueError(
                f"ip_address {self.ip_address!r}: an IPv4 address or network, e.g. 10.0.0.5 or 10.0.0.0/28"
            ) from None
        if self.mac_address is not None and is_multicast_mac(self.mac_address):
            raise ValueError(f"mac_address {self.mac_address} is a multicast MAC; use a unicast one")
        return self


class Port(Filtered):
    name: Name | None = None
    device_id: Id
    type: Literal["bridge", "router"]
    port_group_ids: list[Id] = []
    tunnel_key: TunnelKey | None = None
    host_id: Id | None = None
    interface_name: InterfaceName | None = None
    peer_id: Id | None = None
    port_address: IPv4 | None = None
    network_cidr: CIDR | None = None
    port_mac: MAC | None = None
    vlan_id: VlanId | None = None
    # Largest IP packet this port sends (router ports: DF packets above it get ICMP fragmentation needed).
    mtu: int | None = Field(default=None, ge=576, le=9000)
    # Port security (Neutron's names; bridge ports): what is plugged in may send only from these addresses
    # (kumo.simulation.portsecurity). A port that declares none is not checked.
    mac_address: MAC | None = None
    fixed_ips: list[IPv4] = Field(default=[], max_length=64)
    allowed_address_pairs: list[AddressPair] = Field(default=[], max_length=64)
    port_security_enabled: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Port:
        if (self.host_id is None) != (self.interface_name is None):
            raise ValueError("host_id and interface_name: a binding needs both (or neither)")
        if self.type == "router":
            if self.port_address is None or self.network_cidr is None:
                raise ValueError("port_address and network_cidr are required on a router port")
            if not ip_in(self.port_address, self.network_cidr):
                raise ValueError(f"port_address {self.port_address} is not inside network_cidr {self.network_cidr}")
            net = ipaddress.IPv4Network(self.network_cidr)
            if net.prefixlen < 31 and self.port_address in (
                str(net.network_address),
                str(net.broadcast_address),
            ):
                raise ValueError(
                    f"port_address {self.port_address} is the network or broadcast address of {net}; use a host address"
                )
            if self.port_mac is not None and is_multicast_mac(self.port_mac):
                raise ValueError(f"port_mac {self.port_mac} is a multicast MAC; use a unicast one")
            if self.vlan_id is not None:
                raise ValueError("vlan_id is for bridge ports only")
            for field in ("mac_address", "fixed_ips", "allowed_address_pairs"):
                if getattr(self, field):
                    raise ValueError(f"{field} is for bridge ports (port security); a router port has port_mac")
        else:
            for field in ("port_address", "network_cidr", "port_mac"):
                if getattr(self, field) is not None:
                    raise ValueError(f"{field} is for router ports only (this port is on a bridge)")
            if self.mac_address is not None and is_multicast_mac(self.mac_address):
                raise ValueError(f"mac_address {self.mac_address} is a multicast MAC; use a unicast one")
        if len(set(self.port_group_ids)) != len(self.port_group_ids):
            raise ValueError("port_group_ids lists a port group twice")
        return self


# --- routing -------------------------------------------------------------------------------------------
class Route(Resource):
    router_id: Id
    dst_cidr: CIDR
    src_cidr: CIDR = "0.0.0.0/0"
    next_hop_port_id: Id | None = None
    next_hop_gateway: IPv4 | None = None
    weight: int = Field(default=100, ge=0, le=65535)
    type: Literal["normal", "blackhole", "reject", "local"] = "normal"
    learned: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Route:
        if self.type in ("normal", "local") and self.next_hop_port_id is None:
            raise ValueError(f"next_hop_port_id is required for a {self.type} route")
        if self.type in ("blackhole", "reject") and (self.next_hop_port_id or self.next_hop_gateway):
            raise ValueError(f"a {self.type} route has no next hop: drop next_hop_port_id/next_hop_gateway")
        return self


# --- filtering and NAT ---------------------------------------------------------------------------------
class Chain(Resource):
    name: Name | None = None
    tenant_id: Name | None = None
    rule_ids: list[Id] = []  # read-only: the rules in order; a rule's position is its place here


class NatTarget(Strict):
    address_from: IPv4
    address_to: IPv4
    port_from: L4Port = 0
    port_to: L4Port = 0

    @model_validator(mode="after")
    def _ordered(self) -> NatTarget:
        if ipaddress.IPv4Address(self.address_from) > ipaddress.IPv4Address(self.address_to):
            raise ValueError(f"address_from {self.address_from} is above address_to {self.address_to}")
        if self.port_from > self.port_to:
            raise ValueError(f"port_from {self.port_from} is above port_to {self.port_to}")
        if (self.port_from == 0) != (self.port_to == 0):
            raise ValueError("port_from and port_to: use 0/0 for static NAT, or a range of non-zero ports")
        return self


RuleType = Literal["accept", "drop", "reject", "return", "continue", "jump", "dnat", "snat", "rev_dnat", "rev_snat"]
NAT_TYPES = ("dnat", "snat", "rev_dnat", "rev_snat")
L4_CONDITIONS = ("tp_src", "tp_dst")


class Rule(Resource):
    chain_id: Id
    position: int | None = Field(default=None, ge=1)
    type: RuleType
    jump_chain_id: Id | None = None
    nat_targets: list[NatTarget] = []
    flow_action: Literal["accept", "continue", "return"] | None = None
    # conditions (ANDed; `inv` negates the whole condition)
    inv: bool = False
    match_forward_flow: bool = False
    match_return_flow: bool = False
    in_port_ids: list[Id] = []
    inv_in_ports: bool = False
    out_port_ids: list[Id] = []
    inv_out_ports: bool = False
    port_group_id: Id | None = None
    inv_port_group: bool = False
    ip_addr_group_src: Id | None = None
    inv_ip_addr_group_src: bool = False
    ip_addr_group_dst: Id | None = None
    inv_ip_addr_group_dst: bool = False
    dl_type: int | None = Field(default=None, ge=0, le=0xFFFF)
    inv_dl_type: bool = False
    dl_src: MAC | None = None
    dl_src_mask: MAC | None = None
    inv_dl_src: bool = False
    dl_dst: MAC | None = None
    dl_dst_mask: MAC | None = None
    inv_dl_dst: bool = False
    nw_tos: int | None = Field(default=None, ge=0, le=255)
    nw_proto: int | None = Field(default=None, ge=0, le=255)
    inv_nw_proto: bool = False
    nw_src: CIDR | None = None
    inv_nw_src: bool = False
    nw_dst: CIDR | None = None
    inv_nw_dst: bool = False
    tp_src: PortRange | None = None
    inv_tp_src: bool = False
    tp_dst: PortRange | None = None
    inv_tp_dst: bool = False
    fragment_policy: Literal["any", "header", "nonheader", "unfragmented"] | None = None
    traversed_device: Id | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.type == "jump":
            if self.jump_chain_id is None:
                raise ValueError("jump_chain_id is required for a jump rule")
            if self.jump_chain_id == self.chain_id:
                raise ValueError("jump_chain_id: a chain cannot jump to itself")
        elif self.jump_chain_id is not None:
            raise ValueError(f"jump_chain_id is only for jump rules (this is a {self.type} rule)")
        if self.type in ("dnat", "snat") and not self.nat_targets:
            raise ValueError(f"nat_targets: a {self.type} rule needs at least one target")
        if self.type not in ("dnat", "snat") and self.nat_targets:
            raise ValueError(f"nat_targets are only for dnat and snat rules (this is a {self.type} rule)")
        if self.flow_action is not None and self.type not in NAT_TYPES:
            raise ValueError(f"flow_action is only for NAT rules (this is a {self.type} rule)")
        if self.match_forward_flow and self.match_return_flow:
            raise ValueError("match_forward_flow and match_return_flow cannot both be set")
        if self.dl_src_mask is not None and self.dl_src is None:
            raise ValueError("dl_src_mask needs dl_src")
        if self.dl_dst_mask is not None and self.dl_dst is None:
            raise ValueError("dl_dst_mask needs dl_dst")
        has_l4 = any(getattr(self, f) is not None for f in L4_CONDITIONS)
        if has_l4 and self.fragment_policy in ("any", "nonheader"):
            raise ValueError(
                f"fragment_policy {self.fragment_policy!r} cannot match L4 fields (tp_src/tp_dst): "
                "non-first fragments carry no L4 header; use 'header' or 'unfragmented'"
            )
        return self

    def effective_fragment_policy(self) -> str:
        """API.md: default header when an L4 field is set, else any."""
        if self.fragment_policy is not None:
            return self.fragment_policy
        return "header" if any(getattr(self, f) is not None for f in L4_CONDITIONS) else "any"

    def effective_flow_action(self) -> str | None:
        return (self.flow_action or "accept") if self.type in NAT_TYPES else None


class PortGroup(Resource):
    name: Name | None = None
    tenant_id: Name | None = None
    stateful: bool = False


class IpAddrGroup(Resource):
    name: Name | None = None
    tenant_id: Name | None = None
    addresses: list[IPv4] = []


# --- hosts and tunnels ---------------------------------------------------------------------------------
class Host(Resource):
    name: Name | None = None
    alive: bool = False
    addresses: list[IPv4] = []
    interfaces: list[dict[str, Any]] = []


class TunnelZone(Resource):
    name: Name | None = None
    type: Literal["vxlan"] = "vxlan"


class TunnelZoneMember(Resource):
    tunnel_zone_id: Id
    host_id: Id
    ip_address: IPv4


# --- DHCP ------------------------------------------------------------------------------------------------
class DhcpRoute(Strict):
    destination: CIDR
    gateway: IPv4


class DhcpOption(Strict):
    code: int = Field(ge=1, le=254)
    value: str = Field(max_length=255)


class DhcpSubnet(Resource):
    bridge_id: Id
    cidr: CIDR
    gateway: IPv4 | None = None
    server_address: IPv4 | None = None
    dns_servers: list[IPv4] = []
    mtu: int = Field(default=1450, ge=576, le=9000)  # VXLAN: 1500 - 50 (RFC 7348), see ARCHITECTURE.md
    routes: list[DhcpRoute] = []
    lease_seconds: int = Field(default=86400, ge=60, le=2**31 - 1)
    enabled: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> DhcpSubnet:
        for field in ("gateway", "server_address"):
            value = getattr(self, field)
            if value is not None and not ip_in(value, self.cidr):
                raise ValueError(f"{field} {value} is not inside cidr {self.cidr}")
        return self


class DhcpHost(Resource):
    subnet_id: Id
    bridge_id: Id
    mac: MAC
    ip_address: IPv4
    name: Name | None = None
    extra_options: list[DhcpOption] = []

    @model_validator(mode="after")
    def _unicast(self) -> DhcpHost:
        if is_multicast_mac(self.mac):
            raise ValueError(f"mac {self.mac} is a multicast MAC; a DHCP host entry needs a unicast one")
        return self


# --- load balancing --------------------------------------------------------------------------------------
class LoadBalancer(Resource):
    name: Name | None = None
    router_id: Id
    admin_state_up: bool = True


class HealthMonitor(Resource):
    """Octavia's meanings: a check every `delay` s, failed after `timeout` s; a member goes up after
    `max_retries` checks in a row succeeded, and down after `max_retries_down` in a row failed."""

    name: Name | None = None
    tenant_id: Name | None = None
    type: Literal["tcp", "http", "https"] = "tcp"
    delay: int = Field(default=5, ge=1, le=3600)
    timeout: int = Field(default=3, ge=1, le=3600)
    max_retries: int = Field(default=3, ge=1, le=10)
    max_retries_down: int = Field(default=3, ge=1, le=10)
    url_path: str = Field(default="/", min_length=1, max_length=2048, pattern=r"^/[\x21-\x7e]*$")
    http_method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"] = "GET"
    expected_codes: str = Field(default="200", max_length=200)
    admin_state_up: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> HealthMonitor:
        if self.timeout > self.delay:
            raise ValueError(f"timeout {self.timeout} is longer than delay {self.delay}; use timeout <= delay")
        expected_codes(self.expected_codes)
        return self


def expected_codes(text: str) -> frozenset[int]:
    """The HTTP status codes `text` names: "200", "200,202", "200-204" (Octavia's syntax)."""
    codes: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise ValueError(
                f"expected_codes {text!r}: use codes, lists and ranges of 100-599, e.g. 200 or 200,202 or 200-204"
            ) from None
        if not 100 <= low <= high <= 599:
            raise ValueError(f"expected_codes {text!r}: {part.strip()} is not a code or range within 100-599")
        codes.update(range(low, high + 1))
    return frozenset(codes)


class Pool(Resource):
    name: Name | None = None
    load_balancer_id: Id
    protocol: Literal["tcp", "udp"] = "tcp"
    # round_robin: a weighted consistent hash of each connection; source_ip: of its source address alone
    lb_method: Literal["round_robin", "least_connections", "source_ip"] = "round_robin"
    health_monitor_id: Id | None = None
    admin_state_up: bool = True

    @model_validator(mode="after")
    def _supported_method(self) -> Pool:
        if self.lb_method == "least_connections":
            raise ValueError(
                "lb_method least_connections is not supported (agents choose members without sharing counts); "
                "use round_robin (a weighted consistent hash of each connection) or source_ip"
            )
        return self


class PoolMember(Resource):
    pool_id: Id
    address: IPv4
    protocol_port: int = Field(ge=1, le=65535)
    weight: int = Field(default=1, ge=0, le=256)  # 0: drained (no new connections; existing ones continue)
    admin_state_up: bool = True
    # read-only, from its pool's health monitor (kumo.topology.lbstatus)
    status: Literal["up", "down", "no_monitor"] = "no_monitor"
    status_detail: str | None = None


class Vip(Resource):
    name: Name | None = None
    pool_id: Id
    address: IPv4
    protocol_port: int = Field(ge=1, le=65535)
    session_persistence: Literal["source_ip"] | None = None
    admin_state_up: bool = True


# --- edge -------------------------------------------------------------------------------------------------
class BgpPeer(Resource):
    router_id: Id
    asn: Asn
    address: IPv4
    keepalive: int | None = Field(default=None, ge=1, le=21845)  # (default: a third of hold_time)
    hold_time: int = Field(default=180, ge=0, le=65535)
    password: str | None = Field(default=None, max_length=80)
    # maximum-prefix: a peer that announces more is stopped (until it is changed) and its routes withdrawn
    max_prefixes: int = Field(default=10_000, ge=1, le=1_000_000)
    # the live session (read-only, kumo.topology.bgp): written by the agent that runs it
    state: str = "idle"
    host_id: Id | None = None
    uptime_s: float | None = None
    prefixes_received: int = 0
    prefixes_advertised: int = 0
    last_error: str | None = None
    flaps: int = 0

    @model_validator(mode="after")
    def _timers(self) -> BgpPeer:
        # RFC 4271 §4.2: hold time is 0 or at least 3 s; keepalive is conventionally a third of it.
        if self.hold_time != 0 and self.hold_time < 3:
            raise ValueError(f"hold_time {self.hold_time}: use 0 (no keepalives) or at least 3 seconds")
        if self.keepalive is None:
            self.keepalive = self.hold_time // 3 if self.hold_time else 60
        if self.hold_time and self.keepalive >= self.hold_time:
            raise ValueError(
                f"keepalive {self.keepalive} must be shorter than hold_time {self.hold_time}: "
                f"set keepalive too (e.g. {self.hold_time // 3}, a third of it)"
            )
        return self


class BgpNetwork(Resource):
    router_id: Id
    cidr: CIDR
