"""The kernel-key index: a hit only where the wildcard table would give the same result for the packet."""

from __future__ import annotations

import itertools
from typing import Any

from kumo.agent.keyindex import Indexed, KernelKeyIndex, byte_mask
from kumo.datapath.actions import flow_key
from kumo.datapath.layout import FlowValue
from kumo.packet.flowmatch import BIT, FlowMatch
from kumo.simulation.result import Reason, SimulationResult, Verdict

IFINDEX = 7
UDP = dict(
    in_port="port-a",
    eth_src="02:00:00:00:00:01",
    eth_dst="02:00:00:00:00:02",
    eth_type=0x0800,
    ip_src=0x0A000001,
    ip_dst=0x0A000102,
    ip_proto=17,
    ip_tos=0,
    ip_ttl=64,
    fragment="none",
    tp_src=40000,
    tp_dst=53,
)


def packet(**changes: Any) -> FlowMatch:
    return FlowMatch(**{**UDP, **changes})


def key_of(match: FlowMatch, ifindex: int = IFINDEX) -> bytes:
    return bytes(flow_key(match, ifindex))


def result_for(match: FlowMatch, *read: str) -> SimulationResult:
    """What a simulation that read `read` of `match` returns (its wildcard match: those fields)."""
    for name in read:
        match.get(name)
    return SimulationResult(Verdict.OUTPUT, Reason.FORWARDED, ["port-b"], match=match.wildcard())


def indexed(result: SimulationResult) -> Indexed:
    return Indexed(result, bytes(FlowValue()), reinject=True, drop_counter=None)


def test_a_packet_agreeing_on_the_fields_read_is_found_whatever_else_differs() -> None:
    index = KernelKeyIndex()
    first = packet()
    entry = indexed(result_for(first, "eth_dst", "ip_dst"))
    assert index.add(key_of(first), entry)
    assert index.lookup(key_of(packet(tp_src=40001, ip_src=0x0A000009, ip_tos=8))) is entry
    assert index.lookup(key_of(packet(ip_ttl=3))) is entry  # (the TTL was not read)


def test_a_packet_differing_on_a_field_read_is_not_found() -> None:
    index = KernelKeyIndex()
    first = packet()
    index.add(key_of(first), indexed(result_for(first, "ip_dst", "tp_dst")))
    assert index.lookup(key_of(packet(ip_dst=0x0A000103))) is None
    assert index.lookup(key_of(packet(tp_dst=54))) is None
    assert index.lookup(key_of(packet(), ifindex=IFINDEX + 1)) is None  # another input port


def test_the_fields_that_give_the_bytes_their_meaning_are_always_compared() -> None:
    """Only the destination port was read, but TCP's port 53 is not UDP's, a later fragment carries no
    ports, and a VLAN-tagged frame is another network."""
    index = KernelKeyIndex()
    first = packet()
    index.add(key_of(first), indexed(result_for(first, "tp_dst")))
    assert index.lookup(key_of(packet(ip_proto=6))) is None
    assert index.lookup(key_of(packet(fragment="later", tp_src=None, tp_dst=None))) is None
    assert index.lookup(key_of(packet(vlan=10))) is None
    assert index.lookup(key_of(packet(tp_src=1))) is not None


def test_results_the_key_cannot_tell_apart_are_not_indexed() -> None:
    index = KernelKeyIndex()
    ttl = packet()
    assert not index.add(key_of(ttl), indexed(result_for(ttl, "ip_ttl")))  # not in the key
    icmp = packet(ip_proto=1, tp_src=None, tp_dst=None, icmp_type=8, icmp_code=0, icmp_id=5)
    assert not index.add(key_of(icmp), indexed(result_for(icmp, "ip_dst")))  # ICMP: not indexed
    arp = FlowMatch(in_port="port-a", eth_src=UDP["eth_src"], eth_dst="ff:ff:ff:ff:ff:ff", eth_type=0x0806, arp_op=1)
    assert not index.add(key_of(arp), indexed(result_for(arp, "eth_dst")))
    assert len(index) == 0 and index.lookup(key_of(packet())) is None


def test_byte_masks_cover_exactly_the_fields_read_and_the_meaning_fields() -> None:
    assert byte_mask(BIT["ip_ttl"]) is None and byte_mask(BIT["arp_sha"]) is None
    assert byte_mask(BIT["icmp_id"]) is None
    read = ("eth_src", "eth_dst", "ip_src", "ip_dst", "ip_tos", "tp_src", "tp_dst")
    every_key_field = byte_mask(sum(BIT[n] for n in read))
    assert every_key_field is not None
    for a, b in itertools.combinations(("eth_src", "ip_dst", "tp_src", "tp_dst"), 2):
        assert byte_mask(BIT[a] | BIT[b]) == (byte_mask(BIT[a]) or 0) | (byte_mask(BIT[b]) or 0)
        assert (byte_mask(BIT[a] | BIT[b]) or 0) & ~every_key_field == 0


def test_discard_clear_and_the_maximum() -> None:
    index = KernelKeyIndex(max_entries=2)
    entries = []
    for port in (1, 2):
        match = packet(tp_dst=port)
        entries.append(indexed(result_for(match, "tp_dst")))
        index.add(key_of(match), entries[-1])
    assert len(index) == 2
    index.discard(entries[0])
    assert len(index) == 1 and index.lookup(key_of(packet(tp_dst=1))) is None
    index.discard(entries[0])  # (twice: nothing more goes)
    assert len(index) == 1 and index.lookup(key_of(packet(tp_dst=2))) is entries[1]
    third = packet(tp_dst=3)
    index.add(key_of(third), indexed(result_for(third, "tp_dst")))
    index.add(key_of(packet(tp_dst=4)), indexed(result_for(packet(tp_dst=4), "tp_dst")))  # full: starts over
    assert len(index) == 1 and index.lookup(key_of(packet(tp_dst=4))) is not None
    index.clear()
    assert len(index) == 0 and index.lookup(key_of(packet(tp_dst=4))) is None
