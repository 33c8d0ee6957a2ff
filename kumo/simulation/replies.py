"""Packets the simulation generates: ARP replies and requests, ICMP echo replies and errors.

ICMP errors follow RFC 1812 §4.3.2.7: never about an ICMP error, a non-first fragment, or a packet sent to
(or from) a broadcast or multicast address.
"""

from __future__ import annotations

from kumo.packet import BROADCAST_MAC, PacketError, ip_to_int, is_multicast_mac
from kumo.packet.arp import REPLY, REQUEST, Arp
from kumo.packet.ethernet import ETH_P_ARP, ETH_P_IP, Ethernet
from kumo.packet.flowmatch import FlowMatch
from kumo.packet.icmp import ECHO_REPLY, ERROR_TYPES, Icmp
from kumo.packet.ipv4 import PROTO_ICMP, IPv4


def arp_reply(match: FlowMatch, answer_mac: str) -> bytes:
    """The reply to the ARP request in `match`, from `answer_mac` for the requested address."""
    sha, spa, tpa = match.peek("arp_sha"), match.peek("arp_spa"), match.peek("arp_tpa")
    arp = Arp(REPLY, answer_mac, tpa, sha, spa)
    return Ethernet(match.peek("eth_src"), answer_mac, ETH_P_ARP, arp.build()).build(pad=True)


def arp_request(src_mac: str, src_ip: int, target_ip: int) -> bytes:
    arp = Arp(REQUEST, src_mac, src_ip, "00:00:00:00:00:00", target_ip)
    return Ethernet(BROADCAST_MAC, src_mac, ETH_P_ARP, arp.build()).build(pad=True)


def _original_ip(match: FlowMatch, frame: bytes | None) -> bytes:
    """The offending packet's IP bytes: from the frame, or rebuilt from the match (traces carry no frame)."""
    if frame is not None:
        try:
            eth = Ethernet.parse(frame)
            if eth.ethertype == ETH_P_IP:
                return eth.payload
        except PacketError:
            pass
    ip = IPv4(
        match.original("ip_src") or 0,
        match.original("ip_dst") or 0,
        match.original("ip_proto") or 0,
        bytes(8),
        ttl=match.original("ip_ttl") or 64,
    )
    return ip.build()


def icmp_error_allowed(match: FlowMatch) -> bool:
    if match.peek("ip_proto") == PROTO_ICMP and match.peek("icmp_type") in ERROR_TYPES:
        return False
    if match.peek("fragment") == "later":
        return False
    dst_mac = match.peek("eth_dst") or ""
    if dst_mac == BROADCAST_MAC or is_multicast_mac(dst_mac):
        return False
    dst, src = match.peek("ip_dst") or 0, match.peek("ip_src") or 0
    limited, multicast = 0xFFFFFFFF, range(ip_to_int("224.0.0.0"), ip_to_int("240.0.0.0"))
    return dst != limited and dst not in multicast and src not in multicast and src != 0


def icmp_error(
    match: FlowMatch, frame: bytes | None, port_mac: str, port_ip: int, icmp_type: int, code: int, mtu: int = 0
) -> bytes:
    quote = _original_ip(match, frame)
    icmp = Icmp.error(icmp_type, code, quote, mtu)
    ip = IPv4(port_ip, match.original("ip_src"), PROTO_ICMP, icmp.build(), ttl=64)
    return Ethernet(match.original("eth_src"), port_mac, ETH_P_IP, ip.build()).build(pad=True)


def icmp_echo_reply(match: FlowMatch, frame: bytes | None, port_mac: str) -> bytes:
    data, rest = b"", (match.peek("icmp_id") or 0) << 16
    if frame is not None:
        try:
            request = Icmp.parse(IPv4.parse(Ethernet.parse(frame).payload).payload)
            data, rest = request.payload, request.rest
        except PacketError:
            pass
    icmp = Icmp(ECHO_REPLY, 0, rest, data)
    ip = IPv4(match.peek("ip_dst"), match.peek("ip_src"), PROTO_ICMP, icmp.build(), ttl=64)
    return Ethernet(match.peek("eth_src"), port_mac, ETH_P_IP, ip.build()).build(pad=True)
