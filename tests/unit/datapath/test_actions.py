"""From a simulation result to kernel actions and back to words; a packet's key and its inverse; completing
an offloaded checksum."""

from __future__ import annotations

import struct

import pytest

from kumo.datapath.actions import (
    MAX_FLOOD,
    PER_LINK,
    Out,
    describe_actions,
    describe_key,
    flood_chunks,
    flood_links,
    flow_key,
    flow_value,
    link_key,
    link_value,
    match_fields,
)
from kumo.datapath.layout import LINK_PORT, MAX_LINKS, MAX_OUT, Action, FlowKey, FlowValue
from kumo.datapath.offload import complete_checksum
from kumo.packet import ip_to_int
from kumo.packet.arp import Arp
from kumo.packet.checksum import internet_checksum, pseudo_header
from kumo.packet.ethernet import ETH_P_ARP, ETH_P_IP, Ethernet
from kumo.packet.flowmatch import FlowMatch
from kumo.packet.frame import parse_frame
from kumo.packet.icmp import Icmp
from kumo.packet.ipv4 import PROTO_ICMP, PROTO_TCP, IPv4
from kumo.packet.tcp import Tcp
from kumo.simulation.result import Reason, SimulationResult, Verdict

SRC, DST = ip_to_int("10.0.1.11"), ip_to_int("10.0.2.13")


def tcp_frame(payload: bytes = b"") -> bytes:
    tcp = Tcp(40000, 80, payload=payload).build(SRC, DST)
    return Ethernet("02:00:00:00:00:02", "02:00:00:00:00:01", ETH_P_IP, IPv4(SRC, DST, PROTO_TCP, tcp).build()).build()


def test_a_key_and_its_inverse() -> None:
    match = parse_frame(tcp_frame(), "vm1")
    key = flow_key(match, 7)
    assert describe_key(key) == {
        "in_port": 7,
        "eth_src": "02:00:00:00:00:01",
        "eth_dst": "02:00:00:00:00:02",
        "eth_type": "0x0800",
        "ip_src": "10.0.1.11",
        "ip_dst": "10.0.2.13",
        "ip_proto": 6,
        "tp_src": 40000,
        "tp_dst": 80,
    }
    fields = match_fields(key)
    assert {k: fields[k] for k in ("ip_src", "ip_dst", "tp_src", "tp_dst", "fragment")} == {
        "ip_src": SRC,
        "ip_dst": DST,
        "tp_src": 40000,
        "tp_dst": 80,
        "fragment": "none",
    }
    ping = Ethernet(
        "02:00:00:00:00:02",
        "02:00:00:00:00:01",
        ETH_P_IP,
        IPv4(SRC, DST, PROTO_ICMP, Icmp.echo(True, 9, 1).build()).build(),
    )
    assert describe_key(flow_key(parse_frame(ping.build(), "vm1"), 7))["icmp_id"] == 9


def reference_key(match: FlowMatch, in_port: int) -> FlowKey:
    """The kernel key field by field, as the C struct reads (the packed fast path must give the same bytes)."""
    o = match.original
    key = FlowKey(in_port=in_port, eth_type=o("eth_type") or 0)
    key.eth_src[:] = bytes.fromhex(o("eth_src").replace(":", ""))
    key.eth_dst[:] = bytes.fromhex(o("eth_dst").replace(":", ""))
    key.vlan = 0x1000 | o("vlan") if o("vlan") is not None else 0
    net = lambda ip: struct.unpack("=I", (ip or 0).to_bytes(4, "big"))[0]  # noqa: E731
    if key.eth_type == 0x0806:
        key.tp_src, key.ip_src, key.ip_dst = o("arp_op"), net(o("arp_spa")), net(o("arp_tpa"))
    elif key.eth_type == 0x0800:
        key.ip_src, key.ip_dst, key.ip_proto, key.ip_tos = (
            net(o("ip_src")),
            net(o("ip_dst")),
            o("ip_proto"),
            o("ip_tos"),
        )
        key.fragment = {"none": 0, "first": 1, "later": 2}[o("fragment")]
        if o("icmp_type") is not None:
            key.tp_src, key.tp_dst, key.icmp_id = o("icmp_type"), o("icmp_code"), o("icmp_id") or 0
        else:
            key.tp_src, key.tp_dst = o("tp_src") or 0, o("tp_dst") or 0
    return key


def test_the_packed_key_equals_the_field_by_field_key() -> None:
    vlan_tcp = Ethernet(
        "02:00:00:00:00:02", "02:00:00:00:00:01", ETH_P_IP, IPv4(SRC, DST, PROTO_TCP, Tcp(1, 2).build(SRC, DST)).build()
    )
    vlan_tcp.vlan = 42
    ping = IPv4(SRC, DST, PROTO_ICMP, Icmp.echo(True, 9, 1).build(), tos=0x10)
    arp = Arp(1, "02:00:00:00:00:01", SRC, "00:00:00:00:00:00", DST)
    frames = [
        tcp_frame(b"data"),
        vlan_tcp.build(),
        Ethernet("02:00:00:00:00:02", "02:00:00:00:00:01", ETH_P_IP, ping.build()).build(),
        Ethernet("ff:ff:ff:ff:ff:ff", "02:00:00:00:00:01", ETH_P_ARP, arp.build()).build(),
    ]
    for frame in frames:
        match = parse_frame(frame, "vm1")
        assert bytes(flow_key(match, 7)) == bytes(reference_key(match, 7)), describe_key(flow_key(match, 7))


def test_result_to_actions_and_words() -> None:
    rewrites = {"ip_src": ip_to_int("192.0.2.1"), "tp_src": 20001, "eth_dst": "02:00:00:00:00:03"}
    result = SimulationResult(Verdict.OUTPUT, Reason.FORWARDED, ["a", "b"], rewrites, 1, path_mtu=1400)
    value = flow_value(result, [Out(4), Out(5)])
    assert Action(value.act.flags) == (
        Action.SET_IP_SRC | Action.SET_TP_SRC | Action.SET_ETH_DST | Action.DEC_TTL | Action.OUTPUT
    )
    words = describe_actions(value.act, {4: "tap-a", 5: "tap-b"})
    assert words == [
        "set ip_src=192.0.2.1",
        "set tp_src=20001",
        "dec_ttl 1",
        "set eth_dst=02:00:00:00:00:03",
        "mtu 1400",
        "flood tap-a,tap-b",
    ]
    assert describe_actions(flow_value(result, []).act) == ["drop"]  # no local egress: nothing to output to
    dropped = SimulationResult(Verdict.DROP, Reason.CHAIN_DROP)
    assert Action(flow_value(dropped, [Out(4)]).act.flags) == Action.DROP


def test_tunnelled_outputs_carry_their_vni_and_remote_end() -> None:
    result = SimulationResult(Verdict.FLOOD, Reason.FLOODED, ["a", "b", "c"])
    value = flow_value(result, [Out(4), Out(9, 17, ip_to_int("192.168.50.2"))])
    act = value.act
    assert Action(act.flags) == Action.OUTPUT | Action.TUNNEL
    assert (act.out[1].ifindex, act.out[1].tunnel_key, act.out[1].remote) == (9, 17, 0xC0A83202)
    assert act.out[0].remote == 0
    assert describe_actions(act, {4: "tap-a"})[-1] == "flood tap-a,tunnel(vni=17,remote=192.168.50.2)"


def test_a_long_flood_is_cut_into_a_chain_of_values() -> None:
    assert flood_chunks([Out(i) for i in range(MAX_OUT)]) == [[Out(i) for i in range(MAX_OUT)]]  # fits in one
    chunks = flood_chunks([Out(i) for i in range(40)])
    assert [len(chunk) for chunk in chunks] == [PER_LINK, PER_LINK, 40 - 2 * PER_LINK]
    assert [out for chunk in chunks for out in chunk] == [Out(i) for i in range(40)]  # in order, none lost
    assert [len(c) for c in flood_chunks([Out(i) for i in range(2 * PER_LINK + 1)])] == [PER_LINK, PER_LINK + 1]
    assert MAX_FLOOD == PER_LINK * (MAX_LINKS - 1) + MAX_OUT
    assert len(flood_chunks([Out(i) for i in range(MAX_FLOOD)])) == MAX_LINKS

    _, *tail = chunks
    links = flood_links(3, tail)  # links 1 and 2 of set 3: 1 names 2, 2 names none
    assert [FlowKey.from_buffer_copy(key).ip_dst for key, _ in links] == [1, 2]
    acts = [FlowValue.from_buffer_copy(value).act for _, value in links]
    assert Action.MORE_OUT in Action(acts[0].flags) and (acts[0].out[MAX_OUT - 1].remote, acts[0].n_out) == (2, 15)
    assert Action.MORE_OUT not in Action(acts[1].flags) and acts[1].n_out == 40 - 2 * PER_LINK


def test_a_chain_names_its_links_and_reads_back_whole() -> None:
    result = SimulationResult(Verdict.FLOOD, Reason.FLOODED, [f"p{i}" for i in range(20)])
    outputs = [Out(100 + i) for i in range(19)] + [Out(9, 17, ip_to_int("192.168.50.2"))]
    first, rest = flood_chunks(outputs)
    head = flow_value(result, first, next_link=(7, 1))
    assert Action(head.act.flags) == Action.OUTPUT | Action.MORE_OUT
    assert head.act.n_out == PER_LINK
    pointer = head.act.out[MAX_OUT - 1]
    assert (pointer.ifindex, pointer.tunnel_key, pointer.remote) == (0, 7, 1)  # set 7, link 1

    key = FlowKey.from_buffer_copy(link_key(7, 1))
    assert (key.in_port, key.ip_src, key.ip_dst) == (LINK_PORT, 7, 1)
    rest_of_key = bytearray(bytes(key))
    for name in ("in_port", "ip_src", "ip_dst"):
        field = getattr(FlowKey, name)
        rest_of_key[field.offset : field.offset + field.size] = bytes(field.size)
    assert not any(rest_of_key)  # every other field 0: no packet's key
    link = FlowValue.from_buffer_copy(link_value(rest, None))
    assert Action(link.act.flags) == Action.OUTPUT | Action.TUNNEL  # the last link: no MORE_OUT
    assert link.act.n_out == len(rest) == 5

    names = {100 + i: f"tap{i}" for i in range(19)}
    words = describe_actions(head.act, names, {(7, 1): link.act})
    assert words == ["flood " + ",".join([*(f"tap{i}" for i in range(19)), "tunnel(vni=17,remote=192.168.50.2)"])]
    missing = describe_actions(head.act, names, {})
    assert missing[-1].endswith("(link 1 of set 7 missing)")


def test_a_value_never_takes_more_outputs_than_it_holds() -> None:
    result = SimulationResult(Verdict.FLOOD, Reason.FLOODED, ["a"])
    with pytest.raises(ValueError, match="cut them"):
        flow_value(result, [Out(i + 1) for i in range(MAX_OUT + 1)])
    with pytest.raises(ValueError, match="cut them"):
        flow_value(result, [Out(i + 1) for i in range(MAX_OUT)], next_link=(1, 1))  # its last slot is the link's
    with pytest.raises(ValueError):
        link_value([Out(i + 1) for i in range(MAX_OUT + 1)], None)


def test_an_offloaded_checksum_is_completed_and_a_wrong_one_left_wrong() -> None:
    good = tcp_frame(b"data")
    l4 = 14 + 20
    partial = ~internet_checksum(pseudo_header(SRC, DST, PROTO_TCP, len(good) - l4)) & 0xFFFF
    offloaded = good[: l4 + 16] + struct.pack("!H", partial) + good[l4 + 18 :]
    assert complete_checksum(offloaded) == good
    assert complete_checksum(good) == good
    wrong = good[: l4 + 16] + b"\x12\x34" + good[l4 + 18 :]
    assert complete_checksum(wrong) == wrong
