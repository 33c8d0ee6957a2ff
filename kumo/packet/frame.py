"""A whole frame <-> FlowMatch: parse what arrives at a port, build what the simulation emits."""

from __future__ import annotations

import struct
from typing import Any

from kumo.packet import PacketError
from kumo.packet.arp import LAYOUT as ARP
from kumo.packet.ethernet import ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, TAG, Ethernet
from kumo.packet.ethernet import HEADER as ETH
from kumo.packet.flowmatch import FIELDS, INDEX, FlowMatch
from kumo.packet.icmp import ECHO_REPLY, ECHO_REQUEST
from kumo.packet.icmp import HEADER as ICMP
from kumo.packet.ipv4 import FLAG_MF, OFFSET_MASK, PROTO_ICMP, PROTO_TCP, PROTO_UDP, IPv4
from kumo.packet.ipv4 import HEADER as IP
from kumo.packet.tcp import HEADER as TCP
from kumo.packet.udp import HEADER as UDP

PORTS = struct.Struct("!HH")  # the first four bytes of TCP and UDP: what a first fragment is keyed on
_IN_PORT, _ETH_SRC, _ETH_DST, _ETH_TYPE, _VLAN = (
    INDEX[n] for n in ("in_port", "eth_src", "eth_dst", "eth_type", "vlan")
)
_IP_SRC, _IP_DST, _IP_PROTO, _IP_TOS, _IP_TTL, _FRAGMENT = (
    INDEX[n] for n in ("ip_src", "ip_dst", "ip_proto", "ip_tos", "ip_ttl", "fragment")
)
_TP_SRC, _TP_DST, _ICMP_TYPE, _ICMP_CODE, _ICMP_ID = (
    INDEX[n] for n in ("tp_src", "tp_dst", "icmp_type", "icmp_code", "icmp_id")
)
_ARP_OP, _ARP_SHA, _ARP_SPA, _ARP_THA, _ARP_TPA = (
    INDEX[n] for n in ("arp_op", "arp_sha", "arp_spa", "arp_tha", "arp_tpa")
)


def parse_frame(frame: bytes, in_port: str) -> FlowMatch:
    """The FlowMatch of a frame. Raises PacketError (with a reason) for frames that cannot be read.

    Read in place with the headers' struct layouts, without building header objects: this runs for every
    first packet (the header classes' parse() gives the same fields, and a test holds the two together).
    L4 headers of later fragments are not read (they are not there); of a first fragment only the ports
    (or ICMP type, code and identifier) are, since its L4 lengths describe the whole datagram."""
    size = len(frame)
    if size < ETH.size:
        raise PacketError("eth_truncated", f"{size} bytes")
    dst, src, ethertype = ETH.unpack_from(frame)
    offset, vlan = ETH.size, None
    if ethertype == ETH_P_8021Q:
        if size < offset + TAG.size:
            raise PacketError("vlan_truncated")
        tci, ethertype = TAG.unpack_from(frame, offset)
        vlan = tci & 0x0FFF
        offset += TAG.size
    v: list[Any] = [None] * len(FIELDS)
    v[_IN_PORT], v[_ETH_SRC], v[_ETH_DST], v[_ETH_TYPE], v[_VLAN] = in_port, src.hex(":"), dst.hex(":"), ethertype, vlan
    if ethertype == ETH_P_IP:
        _read_ipv4(frame, offset, v)
    elif ethertype == ETH_P_ARP:
        if size - offset < ARP.size:
            raise PacketError("arp_truncated", f"{size - offset} bytes")
        htype, ptype, hlen, plen, op, sha, spa, tha, tpa = ARP.unpack_from(frame, offset)
        if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4):
            raise PacketError("arp_not_ipv4_ethernet")
        v[_ARP_OP], v[_ARP_SHA], v[_ARP_SPA], v[_ARP_THA], v[_ARP_TPA] = op, sha.hex(":"), spa, tha.hex(":"), tpa
    return FlowMatch.of(v)


def _read_ipv4(frame: bytes, offset: int, v: list[Any]) -> None:
    have = len(frame) - offset
    if have < IP.size:
        raise PacketError("ip_truncated", f"{have} bytes")
    ver_ihl, tos, total, _ident, flags_offset, ttl, proto, _csum, src, dst = IP.unpack_from(frame, offset)
    if ver_ihl >> 4 != 4:
        raise PacketError("ip_bad_version", str(ver_ihl >> 4))
    ihl = (ver_ihl & 0x0F) * 4
    if ihl < IP.size:
        raise PacketError("ip_bad_ihl", str(ihl))
    if total < ihl or total > have:
        raise PacketError("ip_bad_length", f"total {total}, header {ihl}, have {have}")
    later, first = flags_offset & OFFSET_MASK, flags_offset & FLAG_MF
    v[_IP_SRC], v[_IP_DST], v[_IP_PROTO], v[_IP_TOS], v[_IP_TTL] = src, dst, proto, tos, ttl
    v[_FRAGMENT] = "later" if later else "first" if first else "none"
    if later:
        return
    l4, length = offset + ihl, total - ihl  # (the IP payload: a frame may carry padding after it)
    if proto in (PROTO_UDP, PROTO_TCP):
        name = "udp" if proto == PROTO_UDP else "tcp"
        need = PORTS.size if first else (UDP.size if proto == PROTO_UDP else TCP.size)
        if length < need:
            raise PacketError(f"{name}_truncated", f"{length} bytes")
        v[_TP_SRC], v[_TP_DST] = PORTS.unpack_from(frame, l4)
        if first:
            return
        if proto == PROTO_UDP:
            udp_length = UDP.unpack_from(frame, l4)[2]
            if udp_length < UDP.size or udp_length > length:
                raise PacketError("udp_bad_length", f"{udp_length} of {length}")
        else:
            data_offset = (frame[l4 + 12] >> 4) * 4
            if data_offset < TCP.size or data_offset > length:
                raise PacketError("tcp_bad_offset", str(data_offset))
    elif proto == PROTO_ICMP:
        if length < ICMP.size:
            raise PacketError("icmp_truncated", f"{length} bytes")
        icmp_type, code, _csum, rest = ICMP.unpack_from(frame, l4)
        v[_ICMP_TYPE], v[_ICMP_CODE] = icmp_type, code
        if icmp_type in (ECHO_REQUEST, ECHO_REPLY):
            v[_ICMP_ID] = rest >> 16  # (the echo identifier; the sequence number is the low half)


def ip_packet(frame: bytes) -> IPv4:
    eth = Ethernet.parse(frame)
    if eth.ethertype != ETH_P_IP:
        raise PacketError("not_ipv4")
    return IPv4.parse(eth.payload)
