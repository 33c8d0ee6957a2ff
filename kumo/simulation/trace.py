"""Tracing: simulate a described packet on the current topology and learned state, writing nothing.

Defaults make a one-line trace useful: the source MAC is a fixed trace MAC; the destination MAC is what a VM
would use (the address's own MAC when the bridge knows it, else the gateway's router port, else broadcast).
"""

from __future__ import annotations

from typing import Any

from kumo.flowstate.local import LocalFlowState
from kumo.packet import BROADCAST_MAC, int_to_ip, ip_to_int
from kumo.packet.flowmatch import FlowMatch
from kumo.packet.icmp import ECHO_REQUEST
from kumo.packet.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP
from kumo.simulation.view import Snapshot, cidr_to_int, prefix_mask, snapshot_of
from kumo.simulation.walk import simulate
from kumo.topology.errors import InvalidInput, NotFound
from kumo.topology.state import ARP_TABLE, MAC_TABLE, parse_arp_key, parse_mac_key
from kumo.topology.store.base import Store

TRACE_MAC = "02:6b:74:72:63:00"  # "ktrc": the default source MAC of a traced packet
PROTOCOLS = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "icmp": PROTO_ICMP}


class StoreLearned:
    """The learned MAC and ARP tables, read from the store's state tables once per trace."""

    def __init__(self, store: Store) -> None:
        self.macs: dict[tuple[str, str, int | None], str] = {}
        for key, value in store.state_list(MAC_TABLE).items():
            self.macs[parse_mac_key(key)] = value.get("port_id", "")
        self.arps: dict[tuple[str, int], str] = {}
        for key, value in store.state_list(ARP_TABLE).items():
            router, ip = parse_arp_key(key)
            self.arps[(router, ip_to_int(ip))] = value.get("mac", "")

    def mac_port(self, bridge_id: str, mac: str, vlan: int | None) -> str | None:
        return self.macs.get((bridge_id, mac, vlan))

    def arp_mac(self, router_id: str, ip: int) -> str | None:
        return self.arps.get((router_id, ip))


def _default_eth_dst(snap: Snapshot, port: dict[str, Any], src: int, dst: int) -> str:
    if port["type"] == "router":
        return str(port["port_mac"])
    bridge = port["device_id"]
    known = snap.arp_suppression.get(bridge, {})
    if dst in known:
        return known[dst]
    for bridge_port in snap.device_ports.get(bridge, []):
        peer = snap.ports.get(bridge_port.get("peer_id") or "")
        if peer is not None and peer["type"] == "router":
            net, length = cidr_to_int(peer["network_cidr"])
            if src & prefix_mask(length) == net and dst & prefix_mask(length) != net:
                return str(peer["port_mac"])
    return BROADCAST_MAC


def describe_match(match: FlowMatch) -> dict[str, Any]:
    """A packet's fields as API.md's trace packet shows them."""
    fields = match.as_dict()
    proto = fields.get("ip_proto")
    names: dict[Any, str] = {v: k for k, v in PROTOCOLS.items()}
    out: dict[str, Any] = {
        "eth_src": fields.get("eth_src"),
        "eth_dst": fields.get("eth_dst"),
        "vlan_id": fields.get("vlan"),
        "ip_src": int_to_ip(fields["ip_src"]) if "ip_src" in fields else None,
        "ip_dst": int_to_ip(fields["ip_dst"]) if "ip_dst" in fields else None,
        "proto": names.get(proto, proto),
        "ttl": fields.get("ip_ttl"),
        "fragment": fields.get("fragment"),
    }
    if proto == PROTO_ICMP:
        out.update(icmp_type=fields.get("icmp_type"), icmp_code=fields.get("icmp_code"))
    else:
        out.update(src_port=fields.get("tp_src"), dst_port=fields.get("tp_dst"))
    return out


def trace(store: Store, ingress_port_id: str, packet: dict[str, Any]) -> dict[str, Any]:
    snap = snapshot_of(store)
    port = snap.ports.get(ingress_port_id)
    if port is None:
        raise NotFound(f"ingress_port_id: no port with id {ingress_port_id}", code="unknown_reference")
    if not packet.get("ip_src") or not packet.get("ip_dst"):
        raise InvalidInput("packet.ip_src and packet.ip_dst: a traced packet needs both addresses")
    src, dst = ip_to_int(packet["ip_src"]), ip_to_int(packet["ip_dst"])
    proto_value = packet.get("proto")
    if proto_value is None:
        proto_value = "tcp" if packet.get("dst_port") is not None else "icmp"
    proto = PROTOCOLS.get(proto_value, proto_value) if isinstance(proto_value, str) else int(proto_value)
    if not isinstance(proto, int):
        raise InvalidInput(f"packet.proto: {proto_value!r} is not tcp, udp, icmp or a protocol number")
    fields: dict[str, Any] = {
        "in_port": ingress_port_id,
        "eth_src": packet.get("eth_src") or TRACE_MAC,
        "eth_dst": packet.get("eth_dst") or _default_eth_dst(snap, port, src, dst),
        "eth_type": 0x0800,
        "vlan": packet.get("vlan_id"),
        "ip_src": src,
        "ip_dst": dst,
        "ip_proto": proto,
        "ip_tos": 0,
        "ip_ttl": packet.get("ttl") or 64,
        "fragment": packet.get("fragment") or "none",
    }
    if fields["fragment"] != "later":
        if proto in (PROTO_TCP, PROTO_UDP):
            fields.update(tp_src=packet.get("src_port") or 40000, tp_dst=packet.get("dst_port") or 0)
        elif proto == PROTO_ICMP:
            icmp_type = packet.get("icmp_type")
            fields.update(
                icmp_type=ECHO_REQUEST if icmp_type is None else icmp_type, icmp_code=packet.get("icmp_code") or 0
            )
            if fields["icmp_type"] in (0, 8):
                fields["icmp_id"] = 1
    match = FlowMatch(**fields)
    result = simulate(match, snap, StoreLearned(store), LocalFlowState(reserve=False))
    return {
        "steps": [step.as_dict() for step in result.trace],
        "result": {
            "action": result.verdict.value,
            "reason": result.reason.value,
            "egress_port_ids": result.egress_port_ids,
            "packet": describe_match(match),
            "ttl_decrement": result.ttl_decrement,
            "generated": [{"port_id": g.port_id, "what": g.what} for g in result.generated],
            "match_fields": sorted(result.match.fields()) if result.match else [],
        },
    }
