"""The BPF program's masked lookup is the agent's model of it (kumo.datapath.flowmaps.megaflow_key, the order of
kumo_mask_list, exact flows first): random packets against random megaflows under several masks and a few exact
flows, run through the program with BPF_PROG_TEST_RUN; each flow rewrites the destination port to a number of
its own, so the packet that comes out says which flow the kernel chose, and a packet that finds none goes to
the upcall ring. Per-mask hit counters and the datapath's counters follow."""

from __future__ import annotations

import ctypes
import random
import time
from collections.abc import Iterator

import pytest

from kumo.agent.keyindex import byte_mask
from kumo.datapath import build, libbpf
from kumo.datapath.actions import Out, ct_query_value, flow_key, flow_value, with_ct_record
from kumo.datapath.conntrack import KernelConntrack, zone_of
from kumo.datapath.flowmaps import FlowMaps, megaflow_key
from kumo.datapath.layout import CT_ESTABLISHED, CT_NEW, STATS, Config, FlowKey
from kumo.packet import ip_to_int
from kumo.packet.ethernet import ETH_P_IP, Ethernet
from kumo.packet.flowmatch import BIT
from kumo.packet.frame import parse_frame
from kumo.packet.ipv4 import PROTO_TCP, PROTO_UDP, IPv4
from kumo.packet.tcp import Tcp
from kumo.packet.udp import Udp
from kumo.simulation.result import Reason, SimulationResult, Verdict

TC_ACT_SHOT, TC_ACT_REDIRECT = 2, 7
LOOPBACK = 1
MACS = ("02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c")
ADDRESSES = ("10.0.1.11", "10.0.1.12", "10.0.2.13", "192.0.2.1")
PORTS = (80, 443, 1000, 5555)
MASKS = [  # the fields a simulation read: a bridge, a router, a firewall rule on the destination port
    byte_mask(BIT["in_port"] | BIT["eth_src"] | BIT["eth_dst"]),
    byte_mask(BIT["in_port"] | BIT["eth_src"] | BIT["eth_dst"] | BIT["ip_dst"]),
    byte_mask(BIT["in_port"] | BIT["eth_dst"] | BIT["ip_proto"] | BIT["tp_dst"]),
]


@pytest.fixture
def datapath() -> Iterator[tuple[int, FlowMaps, int]]:
    obj = libbpf.BpfObject(str(build.object_path("port_ingress")))
    names = ("kumo_flows", "kumo_megaflows", "kumo_masks", "kumo_mask_list", "kumo_mask_hits")
    try:
        yield obj.program_fd("kumo_port_ingress"), FlowMaps({n: obj.map_fd(n) for n in names}), obj.map_fd("kumo_stats")
    finally:
        obj.close()


def packet(rng: random.Random) -> bytes:
    src, dst = rng.sample(ADDRESSES, 2)
    s, d = ip_to_int(src), ip_to_int(dst)
    sport, dport = rng.choice(PORTS), rng.choice(PORTS)
    proto = rng.choice((PROTO_TCP, PROTO_UDP))
    l4 = Tcp(sport, dport).build(s, d) if proto == PROTO_TCP else Udp(sport, dport, b"u").build(s, d)
    return Ethernet(rng.choice(MACS), rng.choice(MACS), ETH_P_IP, IPv4(s, d, proto, l4).build()).build()


def key_of(frame: bytes) -> bytes:
    return bytes(flow_key(parse_frame(frame, "p"), LOOPBACK))


def marked(number: int) -> bytes:
    """A flow's value: out of the loopback interface with the destination port set to `number`."""
    result = SimulationResult(Verdict.OUTPUT, Reason.FORWARDED, ["p"], {"tp_dst": number})
    return bytes(flow_value(result, [Out(LOOPBACK)]))


def stat(fd: int, name: str) -> int:
    values = (ctypes.c_uint64 * libbpf.possible_cpus())()
    libbpf.lookup(fd, ctypes.c_uint32(STATS.index(name)), values)
    return sum(values)


@pytest.mark.parametrize("seed", range(4))
def test_the_kernel_chooses_the_flow_the_model_chooses(datapath: tuple[int, FlowMaps, int], seed: int) -> None:
    prog, maps, stats = datapath
    rng = random.Random(seed)
    order = rng.sample(range(len(MASKS)), len(MASKS))  # mask id i holds MASKS[i]; tried in this order
    for mask_id, mask in enumerate(MASKS):
        assert mask is not None
        maps.set_mask(mask_id, mask)
    maps.set_mask_order(order)
    exact: dict[bytes, int] = {}
    mega: dict[bytes, int] = {}
    for number in range(1, 13):  # megaflows made from random packets, under random masks
        mask_id = rng.randrange(len(MASKS))
        key = megaflow_key(key_of(packet(rng)), MASKS[mask_id] or 0, mask_id)
        mega[key] = number
    for number in range(100, 103):
        exact[key_of(packet(rng))] = number
    maps.install_many([(k, marked(n)) for k, n in exact.items()] + [(k, marked(n)) for k, n in mega.items()])

    hits_before, upcalls_before = maps.mask_hits(), stat(stats, "upcall")
    expected_hits = [0] * len(MASKS)
    misses = 0
    for _ in range(300):
        frame = packet(rng)
        raw = key_of(frame)
        chosen = exact.get(raw)
        if chosen is None:
            for mask_id in order:
                chosen = mega.get(megaflow_key(raw, MASKS[mask_id] or 0, mask_id))
                if chosen is not None:
                    expected_hits[mask_id] += 1
                    break
        verdict, out = libbpf.test_run(prog, frame)
        if chosen is None:
            misses += 1
            assert verdict == TC_ACT_SHOT, parse_frame(frame, "p")
        else:
            assert verdict == TC_ACT_REDIRECT
            assert parse_frame(out, "p").peek("tp_dst") == chosen, parse_frame(frame, "p")
    hits = [now - then for now, then in zip(maps.mask_hits(), hits_before, strict=False)]
    assert hits[: len(MASKS)] == expected_hits
    assert stat(stats, "upcall") - upcalls_before == misses
    assert 0 < misses < 300 and sum(expected_hits) > 0  # (both paths were taken)


def test_a_mask_out_of_the_order_is_not_tried_and_megaflows_go_and_come(datapath: tuple[int, FlowMaps, int]) -> None:
    prog, maps, stats = datapath
    rng = random.Random(7)
    frame = packet(rng)
    mask = MASKS[0] or 0
    key = megaflow_key(key_of(frame), mask, 5)
    maps.set_mask(5, mask)
    maps.install(key, marked(42))
    maps.set_mask_order([])
    assert libbpf.test_run(prog, frame)[0] == TC_ACT_SHOT  # installed, but its mask is not in the order
    maps.set_mask_order([5])
    hits = stat(stats, "megaflow_hit")
    verdict, out = libbpf.test_run(prog, frame)
    assert verdict == TC_ACT_REDIRECT and parse_frame(out, "p").peek("tp_dst") == 42
    assert stat(stats, "megaflow_hit") == hits + 1
    value = maps.lookup(key)
    assert value is not None and value.packets == 1 and value.last_used_ns > 0
    assert key in maps.last_used()
    assert maps.remove(key)
    assert libbpf.test_run(prog, frame)[0] == TC_ACT_SHOT


def test_connection_tracking_in_the_kernel_records_forward_packets_and_answers_their_replies() -> None:
    """A stateful path's two stages (bpf/lib/conntrack.h): a first-stage megaflow queries its zone, and the
    second lookup finds the megaflow of the answer. A forward packet through a recording megaflow is recorded,
    so its reply is answered "established" (and the agent reads the same from the map, and the kernel what the
    agent records); a reply of a connection never recorded, or recorded in another zone, or idle past the
    timeout, is answered "new"."""
    obj = libbpf.BpfObject(str(build.object_path("port_ingress")))
    names = ("kumo_flows", "kumo_megaflows", "kumo_masks", "kumo_mask_list", "kumo_mask_hits")
    try:
        prog, maps = obj.program_fd("kumo_port_ingress"), FlowMaps({n: obj.map_fd(n) for n in names})
        libbpf.update(obj.map_fd("kumo_config"), ctypes.c_uint32(0), Config(ct_timeout_s=1))
        kernel = KernelConntrack(obj.map_fd("kumo_conntrack"), 1)
        seen = BIT["in_port"] | BIT["eth_src"] | BIT["ip_proto"]  # (addresses and ports: conntrack's)
        mask = (byte_mask(seen) or 0) | (0xFF << (8 * FlowKey.ct.offset))
        maps.set_mask(0, mask)
        maps.set_mask_order([0])
        zone = zone_of("bridge-db")

        def tcp(forward: bool, sport: int) -> bytes:
            s, d = ip_to_int("10.0.1.11"), ip_to_int("10.0.2.13")
            if forward:
                l4 = Tcp(sport, 80).build(s, d)
                return Ethernet(MACS[1], MACS[0], ETH_P_IP, IPv4(s, d, PROTO_TCP, l4).build()).build()
            l4 = Tcp(80, sport).build(d, s)
            return Ethernet(MACS[0], MACS[1], ETH_P_IP, IPv4(d, s, PROTO_TCP, l4).build()).build()

        def stage(frame: bytes, ct: int) -> bytes:
            raw = bytearray(key_of(frame))
            raw[FlowKey.ct.offset] = ct
            return megaflow_key(bytes(raw), mask, 0)

        for forward, new, established in ((True, 2, 1), (False, 3, 4)):
            frame = tcp(forward, 1)
            maps.install(stage(frame, 0), ct_query_value(zone))
            new_value = with_ct_record(marked(new), zone) if forward else marked(new)  # the forward one records
            maps.install(stage(frame, CT_NEW), new_value)
            maps.install(stage(frame, CT_ESTABLISHED), marked(established))

        def answer(frame: bytes) -> int:
            verdict, out = libbpf.test_run(prog, frame)
            assert verdict == TC_ACT_REDIRECT
            return int(parse_frame(out, "p").peek("tp_dst"))

        def key(sport: int, device: str = "bridge-db") -> tuple[int, int, int, int, int, str]:
            return PROTO_TCP, ip_to_int("10.0.1.11"), sport, ip_to_int("10.0.2.13"), 80, device

        assert answer(tcp(False, 40000)) == 3  # a reply of nothing: new
        assert answer(tcp(True, 40000)) == 2  # the forward packet: new, recorded
        assert kernel.has(key(40000)) and not kernel.has(key(40000, "bridge-web"))
        assert answer(tcp(False, 40000)) == 4  # its reply: established
        assert answer(tcp(True, 40000)) == 2  # (the forward direction's own reply is not recorded: new again)
        kernel.record(key(40001))
        assert answer(tcp(False, 40001)) == 4  # what the agent records, the kernel answers
        assert answer(tcp(False, 40002)) == 3
        time.sleep(1.2)
        assert not kernel.has(key(40001))
        assert answer(tcp(False, 40001)) == 3  # idle past the timeout: new
    finally:
        obj.close()
