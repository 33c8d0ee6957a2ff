from __future__ import annotations

from kumo.packet import ip_to_int
from kumo.packet.ethernet import ETH_P_IP, Ethernet
from kumo.packet.flowmatch import FlowMatch
from kumo.packet.frame import parse_frame
from kumo.packet.ipv4 import FLAG_MF, PROTO_TCP, PROTO_UDP, IPv4
from kumo.packet.tcp import Tcp
from kumo.packet.udp import Udp

A, B = ip_to_int("10.0.0.1"), ip_to_int("10.0.0.2")


def test_reads_mark_fields_and_the_wildcard_keeps_original_values() -> None:
    match = FlowMatch(
        in_port="p1", eth_src="02:00:00:00:00:01", eth_dst="02:00:00:00:00:02", ip_src=A, ip_dst=B, tp_dst=80
    )
    assert match.seen_fields() == ["in_port"]
    assert match.get("eth_dst") == "02:00:00:00:00:02"
    match.peek("ip_src")
    match.set("ip_src", ip_to_int("192.0.2.2"))  # a rewrite is not a read
    assert match.get("tp_dst") == 80
    assert match.seen_fields() == ["in_port", "eth_dst", "tp_dst"]
    assert match.changed() == {"ip_src": ip_to_int("192.0.2.2")}
    assert match.wildcard().fields() == {"in_port": "p1", "eth_dst": "02:00:00:00:00:02", "tp_dst": 80}
    match.get("ip_src")
    assert match.wildcard().fields()["ip_src"] == A  # the value that entered, not the rewritten one


def test_parse_frame_reads_l4_of_first_fragments_only() -> None:
    tcp = IPv4(A, B, PROTO_TCP, Tcp(1234, 80).build(A, B))
    frame = Ethernet("02:00:00:00:00:02", "02:00:00:00:00:01", ETH_P_IP, tcp.build()).build()
    match = parse_frame(frame, "p1")
    assert (match.peek("tp_src"), match.peek("tp_dst"), match.peek("fragment")) == (1234, 80, "none")
    later = IPv4(A, B, PROTO_UDP, Udp(1, 2, b"x" * 8).build(A, B), flags_offset=FLAG_MF | 3).build()
    match = parse_frame(Ethernet("02:00:00:00:00:02", "02:00:00:00:00:01", ETH_P_IP, later).build(), "p1")
    assert match.peek("fragment") == "later" and match.peek("tp_dst") is None
