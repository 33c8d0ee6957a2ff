"""The BPF program's masked lookup is the agent's model of it (kumo.datapath.flowmaps.megaflow_key, the order of
kumo_mask_list, exact flows first): random packets against random megaflows under several masks and a few exact
flows, run through the program with BPF_PROG_TEST_RUN; each flow rewrites the destination port to a number of
its own, so the packet that comes out says which flow the kernel chose, and a packet that finds none goes to
the upcall ring. Per-mask hit counters and the datapath's counters follow."""

from __future__ import annotations

import ctypes
import random
from collections.abc import Iterator

import pytest

from kumo.agent.keyindex import byte_mask
from kumo.datapath import build, libbpf
from kumo.datapath.actions import Out, flow_key, flow_value
from kumo.datapath.flowmaps import FlowMaps, megaflow_key
from kumo.datapath.layout import STATS
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
