"""Wire formats: golden bytes, round trips, checksums, malformed input, and scapy as an independent check."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.layers.vxlan import VXLAN

from kumo.packet import PacketError, int_to_ip, ip_to_int
from kumo.packet import dhcp as d
from kumo.packet.arp import REQUEST, Arp
from kumo.packet.checksum import internet_checksum
from kumo.packet.ethernet import ETH_P_ARP, ETH_P_IP, Ethernet
from kumo.packet.icmp import ECHO_REQUEST, TIME_EXCEEDED, Icmp
from kumo.packet.ipv4 import FLAG_MF, PROTO_TCP, PROTO_UDP, IPv4
from kumo.packet.tcp import SYN, Tcp
from kumo.packet.udp import Udp
from kumo.packet.vxlan import Vxlan

A, B = ip_to_int("10.0.0.1"), ip_to_int("10.0.0.2")

# A broadcast ARP request "who has 10.0.0.2, tell 10.0.0.1" from 02:00:00:00:00:01 (RFC 826 layout).
GOLDEN_ARP = bytes.fromhex("ffffffffffff020000000001080600010800060400010200000000010a0000010000000000000a000002")


def test_golden_arp_request() -> None:
    eth = Ethernet.parse(GOLDEN_ARP)
    assert (eth.dst, eth.src, eth.ethertype, eth.vlan) == ("ff:ff:ff:ff:ff:ff", "02:00:00:00:00:01", ETH_P_ARP, None)
    arp = Arp.parse(eth.payload)
    assert (arp.op, arp.sha, arp.spa, arp.tpa) == (REQUEST, "02:00:00:00:00:01", A, B)
    assert Ethernet(eth.dst, eth.src, ETH_P_ARP, arp.build()).build() == GOLDEN_ARP
    assert Ethernet(eth.dst, eth.src, ETH_P_ARP, arp.build()).build(pad=True) == GOLDEN_ARP + bytes(18)


def test_rfc1071_checksum_example() -> None:
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (one's complement), checksum 220d.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


@given(st.binary(max_size=200))
def test_the_checksum_is_the_folded_sum_of_words(data: bytes) -> None:
    padded = data + b"\x00" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(padded) // 2}H", padded))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert internet_checksum(data) == ~total & 0xFFFF
    assert internet_checksum(b"\xff\xff" * 3) == 0 and internet_checksum(b"\x00\x00") == 0xFFFF


def test_vlan_tag_round_trip_matches_scapy() -> None:
    ours = Ethernet("02:00:00:00:00:02", "02:00:00:00:00:01", ETH_P_IP, b"x" * 20, vlan=100, pcp=5).build()
    theirs = bytes(
        Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01") / Dot1Q(vlan=100, prio=5, type=0x800) / (b"x" * 20)
    )
    assert ours == theirs
    parsed = Ethernet.parse(theirs)
    assert (parsed.vlan, parsed.pcp, parsed.ethertype) == (100, 5, ETH_P_IP)


def test_ipv4_tcp_build_matches_scapy_and_checksums_verify() -> None:
    tcp = Tcp(40000, 80, seq=1000, ack=0, flags=SYN, window=29200, options=bytes.fromhex("020405b4"))
    ip = IPv4(A, B, PROTO_TCP, tcp.build(A, B), ttl=64, ident=7, flags_offset=0x4000)
    ours = ip.build()
    theirs = bytes(
        IP(src="10.0.0.1", dst="10.0.0.2", ttl=64, id=7, flags="DF")
        / TCP(sport=40000, dport=80, seq=1000, flags="S", window=29200, options=[("MSS", 1460)])
    )
    assert ours == theirs
    parsed = IPv4.parse(theirs)
    assert parsed.checksum_ok and parsed.dont_fragment and parsed.fragment == "none"
    assert Tcp.parse(parsed.payload).checksum_ok(A, B)


def test_udp_and_icmp_match_scapy() -> None:
    udp = IPv4(A, B, PROTO_UDP, Udp(5353, 53, b"hello").build(A, B)).build()
    assert udp == bytes(IP(src="10.0.0.1", dst="10.0.0.2", ttl=64, id=0) / UDP(sport=5353, dport=53) / b"hello")
    echo = Icmp.echo(True, 0x1234, 7, b"ping").build()
    assert echo == bytes(ICMP(type=8, id=0x1234, seq=7) / b"ping")
    parsed = Icmp.parse(echo)
    assert (parsed.type, parsed.echo_id, parsed.echo_seq, parsed.checksum_ok) == (ECHO_REQUEST, 0x1234, 7, True)


def test_icmp_error_quotes_header_and_eight_bytes() -> None:
    offending = IPv4(A, B, PROTO_UDP, Udp(1111, 2222, b"z" * 40).build(A, B), options=b"\x01\x01\x01\x00").build()
    error = Icmp.error(TIME_EXCEEDED, 0, offending)
    assert error.payload == offending[: 24 + 8]  # 24-byte header (with options) + 8 bytes
    assert Icmp.parse(error.build()).checksum_ok


def test_fragments_and_options() -> None:
    first = IPv4(A, B, PROTO_UDP, b"a" * 16, flags_offset=FLAG_MF).build()
    later = IPv4(A, B, PROTO_UDP, b"b" * 16, flags_offset=2).build()
    assert IPv4.parse(first).fragment == "first"
    assert IPv4.parse(later).fragment == "later" and IPv4.parse(later).frag_offset == 2
    scapy_frag = bytes(IP(src="10.0.0.1", dst="10.0.0.2", frag=2, proto=17, id=0) / (b"b" * 16))
    assert scapy_frag == later
    with_options = bytes(IP(src="10.0.0.1", dst="10.0.0.2", options=[b"\x94\x04\x00\x00"]) / b"data")
    parsed = IPv4.parse(with_options)
    assert parsed.options == b"\x94\x04\x00\x00" and parsed.payload == b"data" and parsed.checksum_ok
    assert parsed.build() == with_options


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x45" + bytes(10), "ip_truncated"),
        (bytes([0x44]) + bytes(19), "ip_bad_ihl"),
        (bytes([0x65]) + bytes(19), "ip_bad_version"),
        (bytes([0x45, 0, 0, 200]) + bytes(16), "ip_bad_length"),
        (bytes([0x4F]) + bytes(19), "ip_bad_length"),
    ],
)
def test_malformed_ipv4_is_refused_with_a_reason(frame: bytes, reason: str) -> None:
    with pytest.raises(PacketError) as info:
        IPv4.parse(frame)
    assert info.value.reason == reason


def test_malformed_l4_and_l2() -> None:
    with pytest.raises(PacketError, match="tcp_bad_offset"):
        Tcp.parse(bytes(12) + b"\x10\x00" + bytes(6))  # offset 4 bytes < 20
    with pytest.raises(PacketError, match="udp_bad_length"):
        Udp.parse(b"\x00\x01\x00\x02\x00\x40\x00\x00")
    with pytest.raises(PacketError, match="eth_truncated"):
        Ethernet.parse(b"\x00" * 5)
    with pytest.raises(PacketError, match="vlan_truncated"):
        Ethernet.parse(bytes(12) + b"\x81\x00\x00")
    with pytest.raises(PacketError, match="arp_truncated"):
        Arp.parse(b"\x00\x01")


def test_ip_checksum_corruption_is_seen() -> None:
    raw = bytearray(IPv4(A, B, PROTO_UDP, b"x" * 8).build())
    raw[8] ^= 0xFF  # ttl
    assert not IPv4.parse(bytes(raw)).checksum_ok


def test_vxlan_matches_scapy() -> None:
    inner = Ethernet("02:00:00:00:00:02", "02:00:00:00:00:01", ETH_P_IP, b"p" * 10).build()
    assert Vxlan(0xABCDEF, inner).build() == bytes(VXLAN(vni=0xABCDEF, flags=0x08) / inner)
    assert Vxlan.parse(bytes(VXLAN(vni=42) / inner)).vni == 42
    with pytest.raises(PacketError, match="vxlan_no_vni"):
        Vxlan.parse(bytes(8))


def test_dhcp_discover_from_scapy_and_offer_back() -> None:
    discover = bytes(
        BOOTP(chaddr=bytes.fromhex("020000000101") + bytes(10), xid=0x1234, flags=0x8000)
        / DHCP(options=[("message-type", "discover"), ("param_req_list", [1, 3, 6, 26, 121]), "end"])
    )
    msg = d.Dhcp.parse(discover)
    assert (msg.op, msg.xid, msg.chaddr, msg.message_type) == (d.BOOTREQUEST, 0x1234, "02:00:00:00:01:01", d.DISCOVER)
    assert msg.option(55) == bytes([1, 3, 6, 26, 121])
    offer = d.Dhcp(
        d.BOOTREPLY,
        msg.xid,
        msg.chaddr,
        yiaddr=ip_to_int("10.0.1.11"),
        siaddr=ip_to_int("10.0.1.1"),
        options=[
            (d.OPT_MESSAGE_TYPE, bytes([d.OFFER])),
            (d.OPT_MTU, (1450).to_bytes(2, "big")),
            (d.OPT_CLASSLESS_ROUTES, d.classless_routes([(0, 0, ip_to_int("10.0.1.1"))])),
        ],
    )
    theirs = BOOTP(offer.build())
    assert int_to_ip(ip_to_int(theirs.yiaddr)) == "10.0.1.11"
    options = dict(o for o in theirs[DHCP].options if isinstance(o, tuple))
    assert options["message-type"] == 2 and options["interface-mtu"] == 1450
    assert d.classless_routes([(ip_to_int("10.9.0.0"), 16, ip_to_int("10.0.1.1"))]) == bytes.fromhex("100a090a000101")
