"""A whole frame <-> FlowMatch: parse what arrives at a port, build what the simulation emits."""

from __future__ import annotations

from kumo.packet import PacketError
from kumo.packet.arp import Arp
from kumo.packet.ethernet import ETH_P_ARP, ETH_P_IP, Ethernet
from kumo.packet.flowmatch import FlowMatch
from kumo.packet.icmp import ECHO_REPLY, ECHO_REQUEST, Icmp
from kumo.packet.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP, IPv4
from kumo.packet.tcp import Tcp
from kumo.packet.udp import Udp


def parse_frame(frame: bytes, in_port: str) -> FlowMatch:
    """The FlowMatch of a frame. Raises PacketError (with a reason) for frames that cannot be read; L4
    headers of non-first fragments are not read (they are not there)."""
    eth = Ethernet.parse(frame)
    fields: dict[str, object] = {
        "in_port": in_port,
        "eth_src": eth.src,
        "eth_dst": eth.dst,
        "eth_type": eth.ethertype,
        "vlan": eth.vlan,
    }
    if eth.ethertype == ETH_P_ARP:
        arp = Arp.parse(eth.payload)
        fields.update(arp_op=arp.op, arp_sha=arp.sha, arp_spa=arp.spa, arp_tha=arp.tha, arp_tpa=arp.tpa)
    elif eth.ethertype == ETH_P_IP:
        ip = IPv4.parse(eth.payload)
        fields.update(
            ip_src=ip.src, ip_dst=ip.dst, ip_proto=ip.proto, ip_tos=ip.tos, ip_ttl=ip.ttl, fragment=ip.fragment
        )
        if ip.frag_offset == 0:
            if ip.proto == PROTO_TCP:
                tcp = Tcp.parse(ip.payload)
                fields.update(tp_src=tcp.src, tp_dst=tcp.dst)
            elif ip.proto == PROTO_UDP:
                udp = Udp.parse(ip.payload)
                fields.update(tp_src=udp.src, tp_dst=udp.dst)
            elif ip.proto == PROTO_ICMP:
                icmp = Icmp.parse(ip.payload)
                fields.update(icmp_type=icmp.type, icmp_code=icmp.code)
                if icmp.type in (ECHO_REQUEST, ECHO_REPLY):
                    fields["icmp_id"] = icmp.echo_id
    return FlowMatch(**fields)


def ip_packet(frame: bytes) -> IPv4:
    eth = Ethernet.parse(frame)
    if eth.ethertype != ETH_P_IP:
        raise PacketError("not_ipv4")
    return IPv4.parse(eth.payload)
