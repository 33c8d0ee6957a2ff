"""The kernel executes the actions the agent derives from a simulation result: the BPF program run on
packets with BPF_PROG_TEST_RUN gives exactly the bytes the packet builders make for the rewritten packet
(checksums included), a flood longer than one value follows its chain of links, a miss goes to the upcall ring
with the key the agent would compute, and a port over its upcall limit storms and is held (its upcalls then do
not wake the agent)."""

from __future__ import annotations

import ctypes
import json
import select
import time
import uuid
from collections.abc import Iterator

import pytest

from kumo.datapath import build, libbpf
from kumo.datapath.actions import Out, flood_chunks, flood_links, flow_key, flow_value
from kumo.datapath.flowmaps import FLOW_KEY_SIZE, last_used
from kumo.datapath.layout import SNAP, STATS, Config, PortLimit, UpcallHeader
from kumo.datapath.ringbuf import CallbackRing, SharedMemoryRing
from kumo.packet import ip_to_int
from kumo.packet.arp import Arp
from kumo.packet.ethernet import ETH_P_ARP, ETH_P_IP, Ethernet
from kumo.packet.frame import parse_frame
from kumo.packet.icmp import Icmp
from kumo.packet.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP, IPv4
from kumo.packet.tcp import Tcp
from kumo.packet.udp import Udp
from kumo.simulation.result import Reason, SimulationResult, Verdict
from kumo.testing.netns import inside, ip

TC_ACT_SHOT, TC_ACT_REDIRECT = 2, 7
LOOPBACK = 1  # BPF_PROG_TEST_RUN runs the program as if on lo
A, B, C, D = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:6b:00:00:00:0c", "02:00:00:00:00:0d"


@pytest.fixture(scope="module")
def program() -> Iterator[tuple[int, int, int]]:
    obj = libbpf.BpfObject(str(build.object_path("port_ingress")))
    try:
        yield obj.program_fd("kumo_port_ingress"), obj.map_fd("kumo_flows"), obj.map_fd("kumo_stats")
    finally:
        obj.close()


def frame(proto: int, src: str, dst: str, l4: object, ttl: int = 64, macs: tuple[str, str] = (B, A)) -> bytes:
    s, d = ip_to_int(src), ip_to_int(dst)
    payload = l4.build(s, d) if isinstance(l4, Tcp | Udp) else l4.build()  # type: ignore[attr-defined]
    return Ethernet(macs[0], macs[1], ETH_P_IP, IPv4(s, d, proto, payload, ttl=ttl).build()).build()


def run(program: tuple[int, int, int], packet: bytes, rewrites: dict[str, object], ttl: int = 1) -> tuple[int, bytes]:
    prog, flows, _ = program
    result = SimulationResult(Verdict.OUTPUT, Reason.FORWARDED, ["p"], rewrites, ttl)
    key = flow_key(parse_frame(packet, "p"), LOOPBACK)
    libbpf.update(flows, key, flow_value(result, [Out(LOOPBACK)]))
    return libbpf.test_run(prog, packet)


def test_routed_tcp_with_snat_and_dnat_gives_the_builders_bytes(program: tuple[int, int, int]) -> None:
    before = frame(PROTO_TCP, "10.0.1.11", "203.0.113.10", Tcp(40000, 80, payload=b"hello"))
    after = frame(PROTO_TCP, "192.0.2.1", "10.0.2.13", Tcp(20001, 8080, payload=b"hello"), ttl=63, macs=(D, C))
    rewrites = {
        "eth_src": C,
        "eth_dst": D,
        "ip_src": ip_to_int("192.0.2.1"),
        "ip_dst": ip_to_int("10.0.2.13"),
        "tp_src": 20001,
        "tp_dst": 8080,
    }
    verdict, out = run(program, before, rewrites)
    assert verdict == TC_ACT_REDIRECT
    assert out == after


def test_udp_rewrites_fix_the_checksum_and_keep_a_zero_one_zero(program: tuple[int, int, int]) -> None:
    before = frame(PROTO_UDP, "10.0.1.11", "10.0.2.13", Udp(5000, 53, b"q" * 11))
    after = frame(PROTO_UDP, "192.0.2.1", "10.0.2.13", Udp(6000, 53, b"q" * 11), ttl=63)
    rewrites = {"ip_src": ip_to_int("192.0.2.1"), "tp_src": 6000}
    assert run(program, before, rewrites) == (TC_ACT_REDIRECT, after)

    no_checksum = bytearray(frame(PROTO_UDP, "10.0.1.11", "10.0.2.13", Udp(5001, 53, b"z")))
    no_checksum[14 + 20 + 6 : 14 + 20 + 8] = b"\x00\x00"  # UDP over IPv4 may send no checksum (RFC 768)
    _, out = run(program, bytes(no_checksum), {"ip_src": ip_to_int("192.0.2.1")})
    assert out[14 + 20 + 6 : 14 + 20 + 8] == b"\x00\x00"
    assert IPv4.parse(out[14:]).src == ip_to_int("192.0.2.1")


def test_icmp_echo_identifier_rewrite(program: tuple[int, int, int]) -> None:
    before = frame(PROTO_ICMP, "10.0.1.11", "198.51.100.7", Icmp.echo(True, 7, 1, b"abc"))
    after = frame(PROTO_ICMP, "192.0.2.2", "198.51.100.7", Icmp.echo(True, 7000, 1, b"abc"), ttl=63)
    rewrites = {"ip_src": ip_to_int("192.0.2.2"), "icmp_id": 7000}
    assert run(program, before, rewrites) == (TC_ACT_REDIRECT, after)


def stat(program: tuple[int, int, int], name: str) -> int:
    values = (ctypes.c_uint64 * libbpf.possible_cpus())()
    libbpf.lookup(program[2], ctypes.c_uint32(STATS.index(name)), values)
    return sum(values)


def test_a_miss_goes_to_the_agent_and_ttl_that_would_expire_too(program: tuple[int, int, int]) -> None:
    upcalls = stat(program, "upcall")
    unknown = frame(PROTO_TCP, "10.0.9.9", "10.0.9.8", Tcp(1, 2))
    assert libbpf.test_run(program[0], unknown)[0] == TC_ACT_SHOT
    assert stat(program, "upcall") == upcalls + 1

    expiring = frame(PROTO_TCP, "10.0.1.11", "10.0.2.13", Tcp(3, 4), ttl=1)
    verdict, _ = run(program, expiring, {})
    assert verdict == TC_ACT_SHOT and stat(program, "ttl_punt") >= 1


def sent(netns: str) -> int:
    """Packets sent by the loopback interface of `netns`."""
    shown = json.loads(ip("-n", netns, "-s", "-j", "link", "show", "lo").stdout)
    return int(shown[0]["stats64"]["tx"]["packets"])


def test_a_long_flood_follows_its_links_and_a_missing_link_is_counted(program: tuple[int, int, int]) -> None:
    """A flood to 34 outputs: the flow's value and two links (15 + 15 + 4). Every output but the last is a
    clone, sent at once (counted on the interface); the last is the program's own redirect. Run in a
    namespace of its own, where nothing else uses the loopback interface the outputs name."""
    prog, flows, _ = program
    packet = frame(PROTO_UDP, "10.0.1.11", "10.0.1.255", Udp(68, 67, b"all"), macs=("ff:ff:ff:ff:ff:ff", A))
    first, *tail = flood_chunks([Out(LOOPBACK)] * 34)
    links = flood_links(9, tail)
    for link, value in links:
        libbpf.update(flows, link, value)
    result = SimulationResult(Verdict.FLOOD, Reason.FLOODED, ["p"])
    libbpf.update(flows, flow_key(parse_frame(packet, "p"), LOOPBACK), flow_value(result, first, next_link=(9, 1)))
    netns = f"kumo-t-{uuid.uuid4().hex[:6]}"
    ip("netns", "add", netns)
    try:
        with inside(netns):
            ip("link", "set", "lo", "up")
            missing = stat(program, "flood_link_missing")
            before = sent(netns)
            assert libbpf.test_run(prog, packet)[0] == TC_ACT_REDIRECT
            assert sent(netns) - before == 33
            assert stat(program, "flood_link_missing") == missing

            libbpf.delete(flows, links[-1][0])  # the chain is cut: the flood stops there, counted
            before = sent(netns)
            assert libbpf.test_run(prog, packet)[0] == TC_ACT_SHOT
            assert sent(netns) - before == 30  # the clones sent before the missing link
            assert stat(program, "flood_link_missing") == missing + 1
    finally:
        ip("netns", "del", netns, check=False)


@pytest.mark.parametrize("reader", ["shared_memory", "libbpf_callback"])
def test_an_upcall_carries_the_key_the_agent_would_compute_from_the_frame(reader: str) -> None:
    """The agent installs a first packet's flow under the key in its upcall: it must be the key the Python
    parser gives for the same frame, for every kind of packet the datapath keys on. Both ring readers (the
    agent's own on x86-64, libbpf's elsewhere) give the same records."""
    tos_ip = IPv4(ip_to_int("10.0.1.11"), ip_to_int("10.0.2.13"), PROTO_UDP, Udp(7, 9, b"t").build(0, 0), tos=0xB8)
    first_fragment = IPv4(ip_to_int("10.0.1.11"), ip_to_int("10.0.2.13"), PROTO_UDP, b"f" * 16, flags_offset=0x2000)
    later_fragment = IPv4(ip_to_int("10.0.1.11"), ip_to_int("10.0.2.13"), PROTO_UDP, b"l" * 16, flags_offset=0x0003)
    arp = Arp(1, B, ip_to_int("10.0.1.11"), "00:00:00:00:00:00", ip_to_int("10.0.1.1"))
    frames = [
        frame(PROTO_TCP, "10.0.1.11", "10.0.2.13", Tcp(40000, 80, payload=b"x")),
        frame(PROTO_UDP, "10.0.1.12", "10.0.2.13", Udp(40001, 53, b"q")),
        frame(PROTO_ICMP, "10.0.1.13", "10.0.2.13", Icmp.echo(True, 77, 1, b"p")),
        frame(PROTO_ICMP, "10.0.1.14", "10.0.2.13", Icmp(3, 1, 0, bytes(28))),
        Ethernet(A, B, ETH_P_IP, tos_ip.build()).build(),
        Ethernet(A, B, ETH_P_IP, first_fragment.build()).build(),
        Ethernet(A, B, ETH_P_IP, later_fragment.build()).build(),
        Ethernet("ff:ff:ff:ff:ff:ff", B, ETH_P_ARP, arp.build()).build(pad=True),
        Ethernet(A, B, ETH_P_IP, IPv4(1, 2, PROTO_UDP, Udp(5, 6).build(1, 2)).build(), vlan=42).build(),
    ]
    obj = libbpf.BpfObject(str(build.object_path("port_ingress")))
    fd = obj.map_fd("kumo_upcalls")
    ring = SharedMemoryRing(fd, libbpf.map_info(fd).max_entries) if reader == "shared_memory" else CallbackRing(fd)
    try:
        for packet in frames:
            assert libbpf.test_run(obj.program_fd("kumo_port_ingress"), packet)[0] == TC_ACT_SHOT
        records = ring.read()
    finally:
        ring.close()
        obj.close()
    assert len(records) == len(frames)
    for packet, record in zip(frames, records, strict=True):
        head = UpcallHeader.from_buffer_copy(record)
        expected = flow_key(parse_frame(packet, "p"), LOOPBACK)
        assert bytes(head.key) == bytes(expected), parse_frame(packet, "p")


def test_a_batch_read_gives_every_flow_once_with_its_last_use() -> None:
    """Idle expiry reads the kernel's flows a few thousand per system call: every flow comes back once (more
    than one batch of them here), with the time the program last used it, read at the C structure's offset."""
    obj = libbpf.BpfObject(str(build.object_path("port_ingress")))
    try:
        flows = obj.map_fd("kumo_flows")
        packets = [frame(PROTO_UDP, "10.0.1.11", "10.0.2.13", Udp(10000 + i, 53, b"q")) for i in range(5000)]
        keys = [flow_key(parse_frame(packet, "p"), LOOPBACK) for packet in packets]
        value = flow_value(SimulationResult(Verdict.OUTPUT, Reason.FORWARDED, ["p"], {}, 1), [Out(LOOPBACK)])
        libbpf.update_batch(flows, b"".join(map(bytes, keys)), bytes(value) * len(keys), len(keys))
        before = time.monotonic_ns()  # the clock of bpf_ktime_get_ns
        assert libbpf.test_run(obj.program_fd("kumo_port_ingress"), packets[4321])[0] == TC_ACT_REDIRECT
        after = time.monotonic_ns()
        used = last_used(flows, FLOW_KEY_SIZE)
    finally:
        obj.close()
    assert sorted(used) == sorted(bytes(key) for key in keys)
    assert before <= used.pop(bytes(keys[4321])) <= after
    assert set(used.values()) == {0}


def test_the_ring_is_read_whole_across_its_end() -> None:
    """More upcalls than the ring holds, read as they come: every one arrives, in order, also those that
    wrap around the end of the ring's memory."""
    obj = libbpf.BpfObject(str(build.object_path("port_ingress")))
    fd = obj.map_fd("kumo_upcalls")
    size = libbpf.map_info(fd).max_entries
    ring = SharedMemoryRing(fd, size)
    per_record = ctypes.sizeof(UpcallHeader) + SNAP + 8  # (SNAP bytes are reserved whatever the frame)
    total, seen = size // per_record * 3 // 2, []
    try:
        for n in range(total):
            packet = frame(PROTO_UDP, "10.0.1.11", "10.0.2.13", Udp(n % 60000 + 1, 7, n.to_bytes(4, "big")))
            assert libbpf.test_run(obj.program_fd("kumo_port_ingress"), packet)[0] == TC_ACT_SHOT
            if n % 1000 == 999:
                seen += ring.read()
        seen += ring.read()
    finally:
        ring.close()
        obj.close()
    payload_at = ctypes.sizeof(UpcallHeader) + 14 + 20 + 8
    assert [int.from_bytes(r[payload_at : payload_at + 4], "big") for r in seen] == list(range(total))


class WatchedPort:
    """The program with maps of its own (counters from zero) and one port under storm control, with short
    times: limit 200 upcalls/s, storm rate 20/s, over the limit for 100 ms to storm (windows of 50 ms), 300 ms
    at or under it to calm down. Every frame `miss` sends is a new flow."""

    def __enter__(self) -> WatchedPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.obj.close()

    def __init__(self) -> None:
        self.obj = libbpf.BpfObject(str(build.object_path("port_ingress")))
        self.prog, self.limits = self.obj.program_fd("kumo_port_ingress"), self.obj.map_fd("kumo_port_limits")
        config = Config(upcall_rate=200, upcall_burst=1, storm_rate=20, storm_enter_ms=100, storm_leave_ms=300)
        libbpf.update(self.obj.map_fd("kumo_config"), ctypes.c_uint32(0), config)
        libbpf.update(self.limits, ctypes.c_uint32(LOOPBACK), PortLimit())  # as the agent does when it attaches
        self._sport = iter(range(1024, 65536))

    def miss(self) -> None:
        packet = frame(PROTO_UDP, "10.0.1.11", "10.0.1.12", Udp(next(self._sport), 9))
        assert libbpf.test_run(self.prog, packet)[0] == TC_ACT_SHOT

    def state(self) -> PortLimit:
        entry = PortLimit()
        assert libbpf.lookup(self.limits, ctypes.c_uint32(LOOPBACK), entry)
        return entry

    def upcalls(self) -> int:
        return stat((self.prog, 0, self.obj.map_fd("kumo_stats")), "upcall")


def test_a_port_over_its_limit_storms_and_is_held_to_the_storm_rate_until_it_calms_down() -> None:
    """Storm control in the program, with short times: limit 200 upcalls/s, storm rate 20/s, over the limit
    for 100 ms to storm, 300 ms at or under it to calm down. Every frame is a new flow (a miss)."""
    with WatchedPort() as port:
        miss, state, upcalls = port.miss, port.state, port.upcalls
        for _ in range(40):  # 100 misses/s for 0.4 s (a stall only slows them): busy, under the limit
            miss()
            time.sleep(0.01)
        assert state().storming_since_ns == 0 and state().storms == 0 and upcalls() == 40

        deadline = time.monotonic() + 5
        while not state().storming_since_ns and time.monotonic() < deadline:
            miss()  # as fast as this loop goes: thousands a second
        assert state().storms == 1, "over its limit for 100 ms, the port storms"
        before, started = upcalls(), time.monotonic()
        while time.monotonic() - started < 0.2:
            miss()
        # held: 20 upcalls/s (4 in 0.2 s, and the bucket's 1), where its limit would have let 40 through
        assert upcalls() - before <= 6, upcalls() - before
        assert state().storming_since_ns

        time.sleep(0.35)  # calm for longer than 300 ms: its next miss lets it go, and goes up itself
        before = upcalls()
        miss()
        assert state().storming_since_ns == 0 and state().storms == 1 and upcalls() == before + 1


def test_a_storm_that_stops_mid_window_is_let_go_at_the_first_miss_after_the_leave_time() -> None:
    """A storm's last window is closed by the first miss after it, which may come long after the storm
    stopped. Its misses happened before the silence: averaged over the silence, a fast storm's last window
    could still look over the limit, and the port, calm for the whole leave time, stayed held for another
    one (seen as a held paced run after a storm, on a host whose storm reached 130,000 misses/s). Short
    times: limit 200/s, windows of 50 ms, leave after 300 ms; 150 misses at the start of a window are 150 in
    0.35 s of silence (429/s, over 200/s) if averaged, and 3,000/s in their own window (over) then calm."""
    with WatchedPort() as port:
        miss, state = port.miss, port.state
        deadline = time.monotonic() + 5
        while not state().storming_since_ns and time.monotonic() < deadline:
            miss()
        assert state().storms == 1
        window = state().window_ns
        while state().window_ns == window and time.monotonic() < deadline:
            miss()  # until a window opens: the storm's last misses all fall at the start of a window
        opened = state().window_ns
        for _ in range(150):
            miss()
        assert state().window_ns == opened, "the 150 misses took more than a window: this host is too slow"
        time.sleep(0.35)  # silent for longer than the leave time
        miss()
        assert state().storming_since_ns == 0, "calm for 350 ms, the port is still held"
        assert state().storms == 1


def test_a_held_ports_upcalls_do_not_wake_the_reader_and_the_next_other_upcall_does() -> None:
    """A held port's upcalls are queued without waking the agent (kumo_ring_lazy); the next upcall that is
    not a held port's wakes it although it is queued behind them, where the ring alone would not wake it."""
    obj = libbpf.BpfObject(str(build.object_path("port_ingress")))
    fd = obj.map_fd("kumo_upcalls")
    ring = SharedMemoryRing(fd, libbpf.map_info(fd).max_entries)
    poller = select.epoll()
    try:
        prog, limits = obj.program_fd("kumo_port_ingress"), obj.map_fd("kumo_port_limits")
        config = Config(upcall_rate=200, upcall_burst=5, storm_rate=100, storm_enter_ms=100, storm_leave_ms=300)
        libbpf.update(obj.map_fd("kumo_config"), ctypes.c_uint32(0), config)
        poller.register(ring.fileno(), select.EPOLLIN)
        assert poller.poll(0.1) == []

        held = PortLimit(storming_since_ns=time.monotonic_ns())
        libbpf.update(limits, ctypes.c_uint32(LOOPBACK), held)
        for sport in (1, 2):
            assert libbpf.test_run(prog, frame(PROTO_UDP, "10.0.1.11", "10.0.1.12", Udp(sport, 9)))[0] == TC_ACT_SHOT
        assert stat((prog, 0, obj.map_fd("kumo_stats")), "upcall_held") == 2
        assert poller.poll(0.2) == [], "a held port's upcalls woke the reader"

        libbpf.update(limits, ctypes.c_uint32(LOOPBACK), PortLimit())  # let go: its next upcall is not held
        assert libbpf.test_run(prog, frame(PROTO_UDP, "10.0.1.11", "10.0.1.12", Udp(3, 9)))[0] == TC_ACT_SHOT
        assert poller.poll(1.0) != [], "the upcall behind the held ones did not wake the reader"
        assert [UpcallHeader.from_buffer_copy(r).key.tp_src for r in ring.read()] == [1, 2, 3]
        assert stat((prog, 0, obj.map_fd("kumo_stats")), "upcall_held") == 2
    finally:
        poller.close()
        ring.close()
        obj.close()


def test_an_earlier_map_is_taken_over_only_if_its_layout_is_the_same() -> None:
    """A restart onto a newer program (an upgrade): an earlier map whose layout differs from the new
    program's (here a hash of 16-byte values offered as its 24-byte config array) is left and the program
    loads with its own, which it could not with that one; a map of the same layout is taken over."""
    earlier = libbpf.BpfObject(str(build.object_path("port_ingress")))
    try:
        offered = {"kumo_flows": earlier.map_fd("kumo_flows"), "kumo_config": earlier.map_fd("kumo_rates")}
        later = libbpf.BpfObject(str(build.object_path("port_ingress")), reuse_maps=offered)
        try:
            assert later.reused == {"kumo_flows"}
            same = libbpf.map_info(later.map_fd("kumo_flows")).id, libbpf.map_info(offered["kumo_flows"]).id
            assert same[0] == same[1]
            assert libbpf.map_info(later.map_fd("kumo_config")).id != libbpf.map_info(offered["kumo_config"]).id
        finally:
            later.close()
    finally:
        earlier.close()
