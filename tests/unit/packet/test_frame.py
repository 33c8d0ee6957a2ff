"""parse_frame reads headers in place; the header classes' parse() is the definition it is held to: the same
fields for every frame, the same reason for every frame it refuses (random, mutated and truncated frames)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kumo.packet import PacketError, ip_to_int
from kumo.packet.arp import Arp
from kumo.packet.ethernet import ETH_P_ARP, ETH_P_IP, Ethernet
from kumo.packet.frame import parse_frame
from kumo.packet.icmp import ECHO_REPLY, ECHO_REQUEST, Icmp
from kumo.packet.ipv4 import FLAG_MF, PROTO_ICMP, PROTO_TCP, PROTO_UDP, IPv4
from kumo.packet.tcp import Tcp
from kumo.packet.udp import Udp

A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def by_header_classes(frame: bytes, in_port: str) -> dict[str, Any]:
    """The fields as the header classes read them (what parse_frame was, before it read in place). A first
    fragment's L4 header is read only as far as its ports: its lengths describe the whole datagram."""
    eth = Ethernet.parse(frame)
    fields: dict[str, Any] = {
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
        if ip.frag_offset == 0 and ip.proto in (PROTO_TCP, PROTO_UDP) and ip.more_fragments:
            if len(ip.payload) < 4:
                raise PacketError("tcp_truncated" if ip.proto == PROTO_TCP else "udp_truncated")
            fields.update(tp_src=int.from_bytes(ip.payload[:2]), tp_dst=int.from_bytes(ip.payload[2:4]))
        elif ip.frag_offset == 0 and ip.proto == PROTO_TCP:
            tcp = Tcp.parse(ip.payload)
            fields.update(tp_src=tcp.src, tp_dst=tcp.dst)
        elif ip.frag_offset == 0 and ip.proto == PROTO_UDP:
            udp = Udp.parse(ip.payload)
            fields.update(tp_src=udp.src, tp_dst=udp.dst)
        elif ip.frag_offset == 0 and ip.proto == PROTO_ICMP:
            icmp = Icmp.parse(ip.payload)
            fields.update(icmp_type=icmp.type, icmp_code=icmp.code)
            if icmp.type in (ECHO_REQUEST, ECHO_REPLY):
                fields["icmp_id"] = icmp.echo_id
    return {name: value for name, value in fields.items() if value is not None}


def outcome(parse: Any, frame: bytes) -> tuple[str, Any]:
    try:
        found = parse(frame, "p1")
    except PacketError as exc:
        return "refused", exc.reason
    return "fields", found if isinstance(found, dict) else found.as_dict()


def samples() -> list[bytes]:
    s, d = ip_to_int("10.0.1.11"), ip_to_int("10.0.2.13")

    def ipv4(proto: int, payload: bytes, **kw: Any) -> bytes:
        return Ethernet(A, B, ETH_P_IP, IPv4(s, d, proto, payload, **kw).build()).build()

    udp = Udp(40000, 53, b"question").build(s, d)
    return [
        ipv4(PROTO_TCP, Tcp(40000, 80, flags=0x02, options=b"\x02\x04\x05\xb4", payload=b"GET /").build(s, d)),
        ipv4(PROTO_TCP, Tcp(40001, 22).build(s, d)),  # a header and nothing more
        ipv4(PROTO_UDP, udp, ttl=3, tos=0xB8),
        ipv4(PROTO_UDP, udp + b"pad"),
        ipv4(PROTO_ICMP, Icmp.echo(True, 0x1234, 7, b"ping").build()),
        ipv4(PROTO_ICMP, Icmp(3, 4, 1400, bytes(28)).build()),
        ipv4(PROTO_UDP, Udp(5, 6, b"x" * 64).build(s, d)[:24], flags_offset=FLAG_MF),  # first fragment
        ipv4(PROTO_UDP, b"y" * 24, flags_offset=3),  # later fragment
        ipv4(47, b"gre"),
        Ethernet(A, B, ETH_P_IP, IPv4(s, d, PROTO_UDP, udp).build(), vlan=42).build(),
        Ethernet("ff:ff:ff:ff:ff:ff", B, ETH_P_ARP, Arp(1, B, s, "00:00:00:00:00:00", d).build()).build(pad=True),
        Ethernet(A, B, 0x86DD, bytes(40)).build(),
    ]


def test_well_formed_frames_give_the_same_fields() -> None:
    for frame in samples():
        assert outcome(parse_frame, frame) == outcome(by_header_classes, frame)
        assert outcome(parse_frame, frame)[0] == "fields"


def test_a_udp_first_fragment_is_keyed_on_its_ports() -> None:
    """Its UDP length covers the whole datagram, more than this fragment carries; it is not malformed."""
    first = samples()[6]
    match = parse_frame(first, "p1")
    assert (match.peek("fragment"), match.peek("tp_src"), match.peek("tp_dst")) == ("first", 5, 6)


@pytest.mark.parametrize("index", range(12))
def test_every_truncation_is_read_alike(index: int) -> None:
    frame = samples()[index]
    for length in range(len(frame) + 1):
        assert outcome(parse_frame, frame[:length]) == outcome(by_header_classes, frame[:length]), length


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 11), st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=4))
def test_mutated_frames_are_read_alike(index: int, mutations: list[tuple[int, int]]) -> None:
    frame = bytearray(samples()[index])
    for at, value in mutations:
        if at < len(frame):
            frame[at] = value
    assert outcome(parse_frame, bytes(frame)) == outcome(by_header_classes, bytes(frame))


def test_random_frames_are_read_alike() -> None:
    rng = random.Random(7)
    heads = [b"", bytes.fromhex("0800"), bytes.fromhex("0806"), bytes.fromhex("8100002a0800")]
    for _ in range(3000):
        head = rng.choice(heads)
        body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
        if head and rng.random() < 0.7:  # mostly IPv4 version 4 with a plausible IHL, to get past L3
            body = bytes([0x45 + rng.randrange(0, 3)]) + body[1:]
        frame = bytes(12) + head + body
        assert outcome(parse_frame, frame) == outcome(by_header_classes, frame), frame.hex()
