"""The host agent: one per host.

Threads: the packet thread owns the datapath, the snapshot, the wildcard table and the kernel flows (it
serves upcalls, applies topology and learned-state changes between them, and does housekeeping); the
store's watch thread only queues changes and wakes it; a writer thread writes learned entries to the store
so that the packet path never waits on the network; the control socket serves `kumo flows` and
`kumo agent stats` under the same lock. The packet thread also runs Python's garbage collector, between
rounds (kumo.agent.collector).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import logging
import os
import queue
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kumo.agent.collector import GENERATIONS, Collector
from kumo.agent.flows import FlowBook, KernelFlow, in_port_of
from kumo.agent.invalidation import tags_for
from kumo.agent.keyindex import KEY_SIZE, Indexed, KernelKeyIndex
from kumo.agent.learned import AgentLearned, arp_tag, mac_tag
from kumo.agent.push import StatePush, decode
from kumo.agent.storms import STORM_SAMPLE_PERIOD, PortState, StormWatch
from kumo.agent.topology import TopologyCache
from kumo.datapath.actions import (
    MAX_FLOOD,
    Out,
    describe_actions,
    describe_key,
    flood_chunks,
    flood_links,
    flow_key,
    flow_value,
    link_key,
)
from kumo.datapath.datapath import Datapath
from kumo.datapath.layout import (
    LINK_PORT,
    MAX_OUT,
    STORM_ENTER_MS,
    STORM_LEAVE_MS,
    UPCALL_HEAD,
    UPCALL_INJECT_MISS,
    UPCALL_MISS,
    Action,
    FlowActions,
    FlowKey,
    UpcallHeader,
)
from kumo.datapath.offload import complete_checksum
from kumo.flowstate.local import LocalFlowState
from kumo.flowstate.redis import FlowStateUnavailable, RedisFlowState
from kumo.flowstate.snat_blocks import SnatBlocks
from kumo.packet import PacketError, int_to_ip, ip_to_int, is_multicast_mac
from kumo.packet.flowmatch import BIT, FlowMatch
from kumo.packet.frame import parse_frame
from kumo.simulation import simulate
from kumo.simulation.result import Generated, LearnWrite, SimulationResult, StateWrite, Verdict
from kumo.simulation.view import Snapshot
from kumo.simulation.wildcard import WildcardTable
from kumo.topology.state import ARP_TABLE, HOSTS_ALIVE, MAC_TABLE, arp_key, mac_key, parse_arp_key, register_host
from kumo.topology.store.base import Change, Session, StateChange, Store

log = logging.getLogger("kumo.agent")

_HEADER = ctypes.sizeof(UpcallHeader)
_KEY_AT = UpcallHeader.key.offset
_TTL = BIT["ip_ttl"]
PARK_TIMEOUT = 3.0  # seconds a packet waits for ARP resolution
PARK_MAX = 64  # packets parked per next hop (the rest are dropped and counted)
HOUSEKEEPING_PERIOD = 0.1  # seconds between housekeeping rounds (parked packets, interfaces)
POLL_TIMEOUT = 0.05  # s; also the longest a held port's upcall waits unread (kumo_ring_lazy)
EXPIRY_PERIOD = 1.0  # seconds between passes over the flows for idle expiry
EXPIRY_BATCH = 200  # flows checked between two short holds of the lock
EXPIRY_READ_ALL_OVER = 2000  # flows due at once above which (and a quarter of all) the kernel's are read in batches
REFRESH_EVERY = 10.0  # seconds between two writes of a flow's state while it is in use (it lives 60 s)
GIL_SWITCH_INTERVAL = 0.0005  # seconds: how long a woken packet thread may wait for a busy thread's GIL
LATENCY_SAMPLES = 4096  # upcall -> re-injection times kept for `kumo agent stats`
LINK_SETS_COLLECTED_EVERY = 5.0  # seconds between looks for flood link sets no flow names any more


class Agent:
    def __init__(
        self,
        store: Store,
        host_id: str,
        state_dir: Path,
        *,
        idle_timeout: float = 60.0,
        stateful_idle_timeout: float = 30.0,
        max_flows: int = 100_000,
        datapath: Datapath | None = None,
        tunnel_ip: str | None = None,
        flow_state: LocalFlowState | RedisFlowState | None = None,
    ) -> None:
        self.store = store
        self.host_id = host_id
        self.tunnel_ip = tunnel_ip  # reported in the host's addresses; zones' members name the address used
        self.state_dir = state_dir
        self.idle_timeout = idle_timeout
        self.stateful_idle_timeout = stateful_idle_timeout
        self.max_flows = max_flows
        self.datapath = datapath or Datapath()
        self.storms = StormWatch(self.datapath.upcall_rate, self.datapath.storm_rate)
        self._held_ifindexes: set[int] = set()  # interfaces storm control held at the last sample
        self._next_storm_sample = 0.0
        self.flow_state = flow_state or LocalFlowState()
        self.snat_blocks: SnatBlocks | None = None  # with shared flow state: SNAT ports leased per host
        if isinstance(self.flow_state, RedisFlowState):
            self.snat_blocks = SnatBlocks(store, lambda: self.session, host_id, self.flow_state.local)
            self.flow_state.allocator = self.snat_blocks
        self.push: StatePush | None = None
        self._pushes: dict[str, list[StateWrite]] = {}  # host -> new state to push this round
        self._stateful_hosts: dict[str, set[str]] = {}  # port -> hosts of its stateful port groups' ports
        self._round_stateful: set[bytes] = set()  # this round's flows whose state must be durable first
        self.learned = AgentLearned()
        self.wildcard = WildcardTable()
        self.by_key = KernelKeyIndex()  # the wildcard table's IPv4 TCP/UDP results, by the kernel's key
        self.book = FlowBook()
        self.snapshot = Snapshot()
        self.topology = TopologyCache()
        self.tunnel_peers: dict[str, int] = {}  # host id -> tunnel IP, for hosts sharing a tunnel zone with this one
        self.counters: collections.Counter[str] = collections.Counter()
        self.lock = threading.RLock()
        self.bindings: dict[str, str] = {}  # port id -> interface name (ports bound to this host)
        self.ifindex_of_port: dict[str, int] = {}  # attached ports only
        self.port_of_ifindex: dict[int, str] = {}
        self.parked: dict[tuple[str, ...], list[tuple[float, bytes, int, str]]] = {}
        self.session: Session | None = None
        self._events: collections.deque[tuple[float, Change | StateChange]] = collections.deque()
        self.invalidation_ms = {"last": 0.0, "max": 0.0}  # store notification -> dependent flows removed
        # the last topology changes applied: when, and how many flows they removed
        self.topology_applied: collections.deque[dict[str, float]] = collections.deque(maxlen=16)
        self._writes: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # the round's flows: installed at its end, entered in the book once their first packets are out
        self._pending: dict[bytes, tuple[KernelFlow, bytes]] = {}  # key -> (flow, the kernel value's bytes)
        self._injects: list[tuple[bytes, int, int, bytes]] = []  # (frame, ifindex, queued_ns, flow) once installed
        self.upcall_latency_us: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        self._values: dict[tuple[int, tuple[Out, ...]], tuple[SimulationResult, bytes]] = {}
        # Floods longer than one kernel value: chains of links (kumo.datapath.actions.flood_chunks), one link
        # set per distinct tail of outputs, shared by the flows that flood the same way.
        self._link_sets: dict[tuple[tuple[Out, ...], ...], int] = {}  # a chain's tail (a link per chunk) -> its set
        self._set_of_value: dict[bytes, int] = {}  # a value that starts a chain -> its link set
        self._chained_flows: dict[bytes, int] = {}  # the key of a flow whose value starts a chain -> its set
        self._next_link_set = 1
        self._next_link_collection = 0.0
        self._warned: set[str] = set()  # hosts without a tunnel, warned about once
        self._owned: dict[tuple[str, str], dict[str, Any]] = {}  # state entries this agent wrote (re-written
        self._expiries = 0  # after its store session expired)
        self._next_follow = 0.0
        self._threads: list[threading.Thread] = []
        self._watches: list[Any] = []
        self._control: Any = None
        self.started = time.time()
        self.collector = Collector()
        self._switch_interval = sys.getswitchinterval()  # the process's own, given back on stop

    # --- life cycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        # The packet thread shares the GIL with the API, expiry and store threads: a woken packet thread waits
        # for the GIL until the running thread lets go, at the latest after the switch interval (5 ms by
        # default; expiry may have thousands of flows due at once). Given back on stop.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self.session = self.store.open_session()
        self._register()
        self.datapath.start()
        self.push = StatePush()
        self._watches = [
            self.store.watch(self._queue_event),
            self.store.state_watch(MAC_TABLE, self._queue_event),
            self.store.state_watch(ARP_TABLE, self._queue_event),
            self.store.state_watch(HOSTS_ALIVE, self._queue_event),
        ]
        with self.lock:
            self.learned.load(self.store)
            self.topology.load(self.store)
            self._rebuild()
            self.datapath.keep_vnis(self._local_vnis())  # (adopted entries of ports no longer here go)
            self._adopt_flows()
        from kumo.agent.control import ControlServer

        self._control = ControlServer(self, self.state_dir / "agent.sock")
        for target, name in (
            (self._packet_loop, "kumo-packets"),
            (self._writer, "kumo-writer"),
            (self._expiry_loop, "kumo-expiry"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._control.start()
        self.collector.take_over()  # the packet thread collects garbage between rounds from now on
        log.info(
            "agent for host %s: %d ports bound here, %d kernel flows %s",
            self.host_id,
            len(self.bindings),
            len(self.book),
            "adopted" if self.datapath.adopted else "(fresh datapath)",
        )

    def _register(self) -> None:
        """Announce this host (its liveness lives with the store session)."""
        assert self.session is not None
        addresses = [self.tunnel_ip] if self.tunnel_ip else []
        register_host(self.store, self.session, self.host_id, name=socket.gethostname(), addresses=addresses)

    def stop(self) -> None:
        """Stop serving. Kernel flows stay and keep forwarding (a restart adopts them).

        The store session is not closed: the host stays alive, and the MAC/ARP entries and SNAT blocks it
        owns stay, until the store times the session out (ZooKeeper: 10 s) or a restarted agent takes them
        over. Closing it would make every other host drop the flows that use those entries, and stall them
        until this agent is back to learn them again."""
        self._stop.set()
        self._wake()
        for watch in self._watches:
            watch.cancel()
        self._writes.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        self.collector.give_back()
        sys.setswitchinterval(self._switch_interval)
        if self._control is not None:
            self._control.stop()
        with self.lock:
            self.datapath.close()
            if self.push is not None:
                self.push.close()
            close = getattr(self.flow_state, "close", None)
            if close is not None:
                close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed (stopping)
            os.write(self._wake_w, b"x")

    def _queue_event(self, event: Change | StateChange) -> None:
        self._events.append((time.monotonic(), event))
        self._wake()

    # --- the packet thread ---------------------------------------------------------------------------
    def _packet_loop(self) -> None:
        ring = self.datapath.upcalls()
        epfd = ring.fileno()
        pushed = self.push.fileno() if self.push is not None else -1
        poller = select.epoll()
        for fd in (epfd, self._wake_r, pushed):
            if fd >= 0:
                poller.register(fd, select.EPOLLIN)
        next_housekeeping = 0.0
        while not self._stop.is_set():
            try:
                ready = {fd for fd, _ in poller.poll(POLL_TIMEOUT)}
                with self.lock:
                    if self._wake_r in ready:
                        _drain(self._wake_r)
                    self._apply_events()
                    if pushed in ready:
                        self._receive_pushes()
                    # every round, woken by the ring or not: a held port's upcalls do not wake the agent
                    self._serve_held_last(ring.read())
                    self._flush()
                    now = time.monotonic()
                    if now >= next_housekeeping:
                        self._housekeeping(now)
                        next_housekeeping = now + HOUSEKEEPING_PERIOD
                self.collector.collect_if_due()  # (the round's packets are out)
            except Exception:  # one bad packet or event must not stop the host's datapath
                self.counters["agent_errors"] += 1
                log.exception("packet thread")
        poller.close()

    def _serve_held_last(self, upcalls: list[bytes]) -> None:
        """Other ports' upcalls first, served and their packets sent, then those of held ports (up to a poll's
        worth, queued without waking the agent), so that another VM's first packet does not wait behind them."""
        if self._held_ifindexes and upcalls:
            others: list[bytes] = []
            held: list[bytes] = []
            for raw in upcalls:
                (held if UPCALL_HEAD.unpack_from(raw)[0] in self._held_ifindexes else others).append(raw)
            if held and others:
                self._serve_upcalls(others)
                self._flush()
                upcalls = held
        self._serve_upcalls(upcalls)

    def _serve_upcalls(self, upcalls: list[bytes]) -> None:
        for raw in upcalls:
            try:
                self._serve(raw)
            except Exception:  # this packet is lost (and counted); the rest of the round is served
                self.counters["agent_errors"] += 1
                log.exception("serving an upcall")

    def _flush(self) -> None:
        """Make this round's new flow state durable (shared store) and push it to the peers that may see the
        return traffic, then install the round's flows in one system call and execute their first packets."""
        dropped: set[bytes] = set()
        try:
            self.flow_state.flush()
        except FlowStateUnavailable:
            dropped = self._fail_closed()
        self._round_stateful.clear()
        self._send_pushes()
        if self._pending:
            self.datapath.install_many([(flow.key, value) for flow, value in self._pending.values()])
        injects, self._injects = self._injects, []
        try:
            for frame, ifindex, queued_ns, raw_key in injects:
                if raw_key in dropped:
                    continue
                self.datapath.inject(frame, ifindex)
                if queued_ns:
                    self.upcall_latency_us.append((time.monotonic_ns() - queued_ns) / 1000)
        finally:  # the book: after the packets (it is not on their path), and whatever befell them
            for flow, _ in self._pending.values():
                self.book.add(flow, self._next_look(flow, flow.created))
            self._pending.clear()

    def _serve(self, raw: bytes) -> None:
        self.counters["upcalls"] += 1
        in_port, length, cap_len, reason, queued_ns = UPCALL_HEAD.unpack_from(raw)
        if reason == UPCALL_INJECT_MISS:
            self.counters["inject_miss"] += 1
            return
        port_id = self.port_of_ifindex.get(in_port)
        if port_id is None:
            self.counters["drop.unbound_interface"] += 1
            return
        key = raw[_KEY_AT : _KEY_AT + KEY_SIZE]
        frame = raw[_HEADER : _HEADER + cap_len]
        truncated = length > cap_len
        if reason == UPCALL_MISS and (hit := self.by_key.lookup(key)) is not None:
            if self.wildcard.holds(hit.result):
                self.counters["wildcard_hits"] += 1
                self.counters["key_index_hits"] += 1
                if hit.drop_counter is not None:
                    self.counters[hit.drop_counter] += 1
                self._queue_flow(key, hit.result, hit.value, hit.reinject, frame, in_port, queued_ns, truncated)
                return
            self.by_key.discard(hit)  # invalidated since: the full path finds what holds now
        self._process(frame, in_port, port_id, truncated, reason, queued_ns=queued_ns, kernel_key=key)

    def _process(
        self,
        frame: bytes,
        ifindex: int,
        port_id: str,
        truncated: bool,
        reason: int,
        queued_ns: int = 0,
        kernel_key: bytes | None = None,
    ) -> None:
        """Serve one packet. `kernel_key`: the key the kernel looked up (an upcall's); the flow is installed
        under it, which saves computing it again from the parsed frame on the first-packet path."""
        try:
            match = parse_frame(frame, port_id)
        except PacketError:
            self.counters["drop.malformed"] += 1
            return
        result = self.wildcard.lookup(match) if reason == UPCALL_MISS else None
        if result is None:
            result = simulate(match, self.snapshot, self.learned, self.flow_state, frame=frame, trace=False)
            self.counters["simulations"] += 1
            self._learn(result.learn_writes)
            self._record_state(result.state_writes)
            self.wildcard.insert(result)
        else:
            self.counters["wildcard_hits"] += 1
        for generated in result.generated:
            self._emit(generated)
        if result.verdict is Verdict.PARK and result.park_until is not None:
            self._park(result.park_until, frame, ifindex, port_id)
            return
        drop_counter = f"drop.{result.reason.value}" if result.verdict is Verdict.DROP else None
        if drop_counter is not None:
            self.counters[drop_counter] += 1
        if result.verdict not in (Verdict.OUTPUT, Verdict.FLOOD, Verdict.DROP):
            return
        if result.one_off or result.generated or match.seen & _TTL:
            return  # about this packet only: its TTL, or a quote, decided it (the kernel key has neither)
        outputs = self._outputs(result)
        raw_key = kernel_key if kernel_key is not None else bytes(flow_key(match, ifindex))
        value = self._value_of(result, outputs)
        if result.state_writes:
            self._round_stateful.add(raw_key)
            for host in self._push_targets(port_id, result):
                self._pushes.setdefault(host, []).extend(result.state_writes)
        elif kernel_key is not None and self.wildcard.holds(result):  # the next such packet: found by its key
            self.by_key.add(kernel_key, Indexed(result, value, bool(outputs), drop_counter))
        self._queue_flow(raw_key, result, value, bool(outputs), frame, ifindex, queued_ns, truncated)

    def _queue_flow(
        self,
        raw_key: bytes,
        result: SimulationResult,
        value: bytes,
        reinject: bool,
        frame: bytes,
        ifindex: int,
        queued_ns: int,
        truncated: bool,
    ) -> None:
        """The flow goes in at the end of the round (_flush), and its first packet after it."""
        flow = KernelFlow(raw_key, result, stateful=bool(result.state_writes))
        self._pending[raw_key] = (flow, value)
        if self._set_of_value:
            self._note_chain(raw_key, value)
        self.counters["flows_installed"] += 1
        if reinject and truncated:
            self.counters["truncated_not_reinjected"] += 1  # a GSO packet: the sender retransmits
        elif reinject:
            self._injects.append((complete_checksum(frame), ifindex, queued_ns, raw_key))
            self.counters["reinjected"] += 1

    def _note_chain(self, raw_key: bytes, value: bytes) -> None:
        link_set = self._set_of_value.get(value)
        if link_set is not None:
            self._chained_flows[raw_key] = link_set

    # --- shared flow state: durable before forwarding, pushed to the peers that see the return traffic ----
    def _fail_closed(self) -> set[bytes]:
        """The shared store did not take this round's new state: its stateful flows are neither installed nor
        forwarded (their replies could not be recognised elsewhere); the sender retransmits."""
        dropped = set(self._round_stateful)
        for raw in dropped:
            self._pending.pop(raw, None)
        self.counters["drop.flow_state_unavailable"] += len(dropped)
        self._pushes.clear()
        return dropped

    def _push_targets(self, port_id: str, result: SimulationResult) -> set[str]:
        hosts = set(self._stateful_hosts.get(port_id, ()))
        for egress in result.egress_port_ids:
            hosts |= self._stateful_hosts.get(egress, set())
            port = self.snapshot.ports.get(egress)
            if port is not None and port.get("host_id"):
                hosts.add(port["host_id"])
        hosts.discard(self.host_id)
        return hosts

    def _send_pushes(self) -> None:
        pushes, self._pushes = self._pushes, {}
        if self.push is None:
            return
        for host, writes in pushes.items():
            remote = self.tunnel_peers.get(host)
            if remote is None:
                self.counters["push_no_tunnel"] += 1
                continue
            try:
                self.push.send(self.host_id, remote, writes)
                self.counters["state_pushed"] += len(writes)
            except OSError:
                self.counters["push_send_errors"] += 1

    def _receive_pushes(self) -> None:
        assert self.push is not None
        peers = {int_to_ip(ip): host for host, ip in self.tunnel_peers.items()}
        for address, data in self.push.receive():
            if address not in peers:
                self.counters["push_from_stranger"] += 1
                continue
            try:
                _, writes = decode(data)
            except ValueError:
                self.counters["push_malformed"] += 1
                continue
            for write in writes:
                self.flow_state.learn(write.kind, write.key, write.value)
                self._invalidate((write.kind, write.key))  # results cached before this state existed
            self.counters["state_received"] += len(writes)

    def _value_of(self, result: SimulationResult, outputs: list[Out]) -> bytes:
        """The kernel value (actions) of a result as bytes, made once per (result, outputs): wildcard hits share
        it, and a round's flows go to the kernel as one buffer of keys and one of values."""
        cache_key = (id(result), tuple(outputs))
        cached = self._values.get(cache_key)
        if cached is not None and cached[0] is result:
            return cached[1]
        if len(self._values) > 10_000:
            self._values.clear()
        if len(outputs) > MAX_OUT:  # a long flood: the flow's value starts a chain of links
            first, *tail = flood_chunks(outputs)
            link_set = self._link_set(tail)
            value = bytes(flow_value(result, first, next_link=(link_set, 1)))
            self._set_of_value[value] = link_set
        else:
            value = bytes(flow_value(result, outputs))
        self._values[cache_key] = (result, value)  # (holding the result keeps its id from being reused)
        return value

    def _link_set(self, tail: list[list[Out]]) -> int:
        """The link set holding a long flood's outputs after its first value's, installed now if new (so
        that it is in the kernel before any flow that names it)."""
        shape = tuple(tuple(chunk) for chunk in tail)
        link_set = self._link_sets.get(shape)
        if link_set is None:
            link_set, self._next_link_set = self._next_link_set, self._next_link_set + 1
            links = flood_links(link_set, tail)
            self.datapath.install_many(links)
            self._link_sets[shape] = link_set
        return link_set

    def _collect_link_sets(self) -> None:
        """Remove the link sets no booked or pending flow names any more, with every cached value that names
        them (the values cache and the key index: a later hit must not install a flow naming a removed set)."""
        for raw in [raw for raw in self._chained_flows if raw not in self.book and raw not in self._pending]:
            del self._chained_flows[raw]
        live = set(self._chained_flows.values())
        dead = {shape: link_set for shape, link_set in self._link_sets.items() if link_set not in live}
        if not dead:
            return
        self._values.clear()
        self.by_key.clear()
        self._set_of_value = {value: s for value, s in self._set_of_value.items() if s in live}
        self._link_sets = {shape: s for shape, s in self._link_sets.items() if s in live}
        for shape, link_set in dead.items():
            for index in range(1, len(shape) + 1):  # one link per chunk of the tail (flood_links)
                self.datapath.remove(link_key(link_set, index))
        self.counters["flood_link_sets_removed"] += len(dead)

    def _outputs(self, result: SimulationResult) -> list[Out]:
        outputs = []
        for port_id in result.egress_port_ids:
            ifindex = self.ifindex_of_port.get(port_id)
            out = Out(ifindex) if ifindex is not None else self._tunnel_to(port_id)
            if out is not None:
                outputs.append(out)
        if len(outputs) > MAX_FLOOD:
            self.counters["flood_truncated"] += 1  # the longest chain of kernel values holds MAX_FLOOD outputs
            if "flood" not in self._warned:
                self._warned.add("flood")
                log.warning(
                    "a flood to %d ports: only the first %d get a copy (the kernel's longest chain of flood links)",
                    len(outputs),
                    MAX_FLOOD,
                )
            return outputs[:MAX_FLOOD]
        return outputs

    def _tunnel_to(self, port_id: str) -> Out | None:
        """The tunnel to a port bound to another host: VNI = its tunnel key, remote = its host's tunnel IP in a
        zone both hosts are members of."""
        port = self.snapshot.ports.get(port_id)
        host = port.get("host_id") if port is not None else None
        if port is None or not host or not port.get("interface_name"):
            self.counters["egress_unbound"] += 1
            return None
        if host == self.host_id:
            self.counters["egress_not_local"] += 1  # bound here, but its interface is not (yet) there
            return None
        remote = self.tunnel_peers.get(host)
        if remote is None or not self.datapath.vxlan_ifindex:
            self.counters["drop.no_tunnel"] += 1
            if host not in self._warned:
                self._warned.add(host)
                log.warning(
                    "no tunnel to host %s (port %s): %s",
                    host,
                    port_id,
                    "the VXLAN device could not be created here"
                    if not self.datapath.vxlan_ifindex
                    else f"put hosts {self.host_id} and {host} in one tunnel zone "
                    "(PUT /v1/tunnel_zones/{id}/members/{host_id})",
                )
            return None
        return Out(self.datapath.vxlan_ifindex, port["tunnel_key"], remote)

    def _local_vnis(self) -> dict[int, int]:
        """VNI -> ifindex for the ports attached here: what the VXLAN program delivers without an upcall."""
        out = {}
        for port_id, ifindex in self.ifindex_of_port.items():
            port = self.snapshot.ports.get(port_id)
            if port is not None and port.get("tunnel_key"):
                out[port["tunnel_key"]] = ifindex
        return out

    def _learn(self, writes: list[LearnWrite]) -> None:
        session = self.session
        for write in writes:
            if write.kind == "mac":
                bridge, mac, vlan = write.key
                self.learned.macs[(bridge, mac, vlan)] = write.value
                self._invalidate(mac_tag(bridge, mac, vlan))
                entry = {"port_id": write.value, "host_id": self.host_id}
                store_key = mac_key(bridge, mac, vlan)
                self._owned[(MAC_TABLE, store_key)] = entry
                self._writes.put(functools.partial(self.store.state_put, MAC_TABLE, store_key, entry, owner=session))
            else:
                router, ip = write.key
                self.learned.arps[(router, ip)] = write.value
                self._invalidate(arp_tag(router, ip))
                ip_text = int_to_ip(ip)
                entry = {"mac": write.value, "host_id": self.host_id}
                store_key = arp_key(router, ip_text)
                self._owned[(ARP_TABLE, store_key)] = entry
                self._writes.put(functools.partial(self.store.state_put, ARP_TABLE, store_key, entry, owner=session))
                self._resume(("arp", router, ip_text))

    def _record_state(self, writes: list[StateWrite]) -> None:
        for write in writes:
            self.flow_state.record(write.kind, write.key, write.value)
            self._invalidate((write.kind, write.key))  # results cached before this state existed

    def _emit(self, generated: Generated) -> None:
        """Send a packet the simulation made: out of a local VM's interface, or into the peer device of an
        interior port (a router's ICMP error or ARP request crossing a bridge to the VMs)."""
        port = self.snapshot.ports.get(generated.port_id)
        if port is None:
            return
        if port.peer is None:
            self._send_local(generated.port_id, generated.frame)
            return
        try:
            match = parse_frame(generated.frame, port.peer["id"])
        except PacketError:
            return
        walk = simulate(match, self.snapshot, self.learned, self.flow_state, frame=generated.frame, trace=False)
        if walk.verdict not in (Verdict.OUTPUT, Verdict.FLOOD):
            self.counters[f"generated_dropped.{walk.reason.value}"] += 1  # e.g. a port's filter drops it
            return
        if walk.rewrites or walk.ttl_decrement:
            self.counters["generated_needs_rewrite"] += 1  # not executed in Python (see README, limits)
            return
        for port_id in walk.egress_port_ids:
            self._send_local(port_id, generated.frame)

    def _send_local(self, port_id: str, frame: bytes) -> None:
        """A generated frame out of a port: its local interface, or through the tunnel to its host."""
        interface = self.bindings.get(port_id)
        try:
            if interface is not None and port_id in self.ifindex_of_port:
                self.datapath.send(interface, frame)
            else:
                tunnel = self._tunnel_to(port_id)
                if tunnel is None:
                    self.counters["generated_not_sent"] += 1
                    return
                self.datapath.send_tunnel(tunnel.tunnel_key, tunnel.remote, frame)
            self.counters["generated_sent"] += 1
        except OSError:
            self.counters["generated_send_error"] += 1

    def _park(self, event: tuple[str, ...], frame: bytes, ifindex: int, port_id: str) -> None:
        waiting = self.parked.setdefault(event, [])
        if len(waiting) >= PARK_MAX:
            self.counters["drop.park_full"] += 1
            return
        waiting.append((time.monotonic() + PARK_TIMEOUT, frame, ifindex, port_id))
        self.counters["parked"] += 1

    def _resume(self, event: tuple[str, ...]) -> None:
        for _, frame, ifindex, port_id in self.parked.pop(event, []):
            self.counters["resumed"] += 1
            self._process(frame, ifindex, port_id, truncated=False, reason=UPCALL_MISS)

    # --- changes ------------------------------------------------------------------------------------------
    def _apply_events(self) -> None:
        topology_changed = False
        tags: set[Any] | None = set()
        first = None
        while self._events:
            queued, event = self._events.popleft()
            first = queued if first is None else first
            if isinstance(event, StateChange) and event.table == HOSTS_ALIVE:
                if self.topology.apply_alive(event):  # routes through its exterior ports come or go
                    topology_changed = True
                    tags = None if tags is None else tags | self._routes_via(event.key)
                continue
            if isinstance(event, StateChange):
                tag = self.learned.apply(event)
                if tag is not None:
                    self._invalidate(tag)
                if event.new is not None and event.table == ARP_TABLE:
                    self._resume(("arp", *parse_arp_key(event.key)))
                continue
            topology_changed = True
            if event.op == "resync":
                self.topology.load(self.store)  # fell behind the change log: read everything again
            else:
                self.topology.apply(event)
            if event.kind == "hosts":  # a host registering for the first time starts alive or dead
                tags = None if tags is None else tags | self._routes_via(event.id)
            more = tags_for(event)
            tags = None if more is None or tags is None else tags | more
        if topology_changed:
            removed = self.counters["flows_removed"]
            self._rebuild()
            if tags is None:
                self._invalidate_all()
            else:
                for tag in tags:
                    self._invalidate(tag)
            # wall-clock time, comparable across the hosts of one machine (bench/convergence_bench.py)
            self.topology_applied.append({"at": time.time(), "flows_removed": self.counters["flows_removed"] - removed})
        if first is not None:
            took = (time.monotonic() - first) * 1000
            self.invalidation_ms = {"last": round(took, 2), "max": round(max(took, self.invalidation_ms["max"]), 2)}

    def _routes_via(self, host_id: str) -> set[str]:
        """The tags of the routes whose next hop may be a port of `host_id` (they depend on its liveness)."""
        return {f"routes:{r}" for r in self.topology.routers_via(host_id)}

    def _rebuild(self) -> None:
        """A new snapshot of the topology, and the bindings of this host's ports followed."""
        self.by_key.clear()  # (its kernel actions were made from the old snapshot, tunnels and interfaces)
        self.snapshot = self.topology.snapshot()
        self.tunnel_peers = self.topology.tunnel_peers(self.host_id)
        self._stateful_hosts = self.topology.stateful_hosts(self.snapshot)
        bound = {
            p["id"]: p["interface_name"]
            for p in self.snapshot.ports.values()
            if p.get("host_id") == self.host_id and p.get("interface_name")
        }
        for port_id, interface in list(self.bindings.items()):
            if bound.get(port_id) != interface:
                self._unbind(port_id, interface)
        for port_id, interface in bound.items():
            if port_id not in self.bindings:
                self.bindings[port_id] = interface
                self._try_attach(port_id)

    def _try_attach(self, port_id: str) -> None:
        interface = self.bindings[port_id]
        ifindex = self.datapath.attach(interface)
        if ifindex is None:
            return  # not there yet: housekeeping retries (API.md: binding ahead of the interface is fine)
        self.ifindex_of_port[port_id] = ifindex
        self.port_of_ifindex[ifindex] = port_id
        self.by_key.clear()  # (a result's outputs to this port were tunnels, or none, until now)
        port = self.snapshot.ports.get(port_id)
        tunnel_key = port.get("tunnel_key") if port is not None else None
        if tunnel_key:
            self.datapath.set_vni(tunnel_key, ifindex)
        self.counters["interfaces_attached"] += 1
        log.info("port %s: attached to %s (ifindex %d)", port_id, interface, ifindex)

    def _unbind(self, port_id: str, interface: str) -> None:
        ifindex = self.ifindex_of_port.pop(port_id, None)
        self.bindings.pop(port_id, None)
        self.by_key.clear()
        if ifindex is not None:
            self.port_of_ifindex.pop(ifindex, None)
            try:
                self.datapath.detach(interface)
            except Exception:  # the interface may be gone with its namespace
                log.debug("detach %s", interface, exc_info=True)
            self._remove_in_port(ifindex)
        self._invalidate(f"port:{port_id}")

    def _remove_in_port(self, ifindex: int) -> None:
        self.datapath.forget_vnis_of(ifindex)
        self.datapath.forget_port(ifindex)
        for raw in self.book.booked():
            if in_port_of(raw) == ifindex:
                self._remove_flow(raw)

    def _invalidate(self, tag: Any) -> None:
        self.wildcard.invalidate(tag)
        for raw in self.book.tagged(tag):
            self._remove_flow(raw)

    def _invalidate_all(self) -> None:
        self.wildcard = WildcardTable()
        for raw in self.book.booked():
            self._remove_flow(raw)

    def _remove_flow(self, raw: bytes) -> None:
        self._pending.pop(raw, None)
        if self.book.pop(raw):
            self.datapath.remove(raw)
            self.counters["flows_removed"] += 1

    # --- housekeeping ---------------------------------------------------------------------------------
    def _housekeeping(self, now: float) -> None:
        if self.session is not None and self.session.expiries != self._expiries:
            self._expiries = self.session.expiries
            self.counters["store_session_expired"] += 1
            self._writes.put(functools.partial(self._register_again, dict(self._owned)))
        if now >= self._next_follow:  # interfaces: once a second
            self._follow_interfaces()
            self._next_follow = now + 1.0
        if now >= self._next_link_collection:
            self._collect_link_sets()
            self._next_link_collection = now + LINK_SETS_COLLECTED_EVERY
        if now >= self._next_storm_sample and self.storms.enabled:
            self._watch_storms(now)
            self._next_storm_sample = now + STORM_SAMPLE_PERIOD
        for event, waiting in list(self.parked.items()):
            kept = [w for w in waiting if w[0] > now]
            self.counters["drop.arp_timeout"] += len(waiting) - len(kept)
            if kept:
                self.parked[event] = kept
            else:
                del self.parked[event]

    def _watch_storms(self, now: float) -> None:
        """Log and count the interfaces the program starts or stops holding to the storm rate."""
        limits = self.datapath.port_limits(list(self.port_of_ifindex))
        states = {i: PortState(e.offered, bool(e.storming_since_ns), e.storms) for i, e in limits.items()}
        started, ended = self.storms.observe(now, states)
        self._held_ifindexes = set(self.storms.held(now))
        for ifindex, times in started.items():
            self.counters["storms_started"] += times
            port_id = self.port_of_ifindex.get(ifindex, "")
            log.warning(
                "port %s (%s) offers %d new flows/s, over the limit of %d/s for %d ms: held to %d upcalls/s "
                "until it has stayed at or under the limit for %d s",
                port_id,
                self.bindings.get(port_id, "?"),
                self.storms.offered_per_s(ifindex),
                self.storms.limit,
                STORM_ENTER_MS,
                self.storms.storm_rate,
                STORM_LEAVE_MS // 1000,
            )
        for ifindex in ended:
            self.counters["storms_ended"] += 1
            log.info("port %s: calm again, back to %d upcalls/s", self.port_of_ifindex.get(ifindex), self.storms.limit)

    def _follow_interfaces(self) -> None:
        for port_id, interface in self.bindings.items():
            ifindex = self.ifindex_of_port.get(port_id)
            current = self.datapath.ifindex(interface)
            if ifindex is not None and current != ifindex:  # gone, or replaced by a new interface
                self.by_key.clear()
                self.ifindex_of_port.pop(port_id, None)
                self.port_of_ifindex.pop(ifindex, None)
                self._remove_in_port(ifindex)
                self._invalidate(f"port:{port_id}")
                self.counters["interfaces_lost"] += 1
                ifindex = None
            if ifindex is None and current is not None:
                self._try_attach(port_id)

    def _expiry_loop(self) -> None:
        """Idle expiry in a thread of its own: the map reads run here (ctypes lets go of the GIL during each
        system call), and the lock is held only to remove a batch, so upcalls never wait behind a sweep."""
        while not self._stop.wait(EXPIRY_PERIOD):
            try:
                self._expire_pass()
            except Exception:
                self.counters["agent_errors"] += 1
                log.exception("expiry")

    def _timeout(self, flow: KernelFlow) -> float:
        return self.stateful_idle_timeout if flow.stateful else self.idle_timeout

    def _next_look(self, flow: KernelFlow, active: float) -> float:
        """When a flow last active at `active` must be looked at again: when it would have been idle for its
        timeout, and for a stateful flow also when its state is due to be written again."""
        at = active + self._timeout(flow)
        return min(at, flow.refreshed + REFRESH_EVERY) if flow.stateful else at

    def _expire_pass(self) -> None:
        """Look at the flows whose time has come (FlowBook.schedule): expire those idle for their timeout,
        write again the state of stateful flows used since it was last written, look again later at the
        rest. The kernel's last-use times are read one flow at a time, or all in batches when many are due."""
        with self.lock:
            due = self.book.due(time.monotonic())
        if len(due) > max(EXPIRY_READ_ALL_OVER, len(self.book) // 4):
            last_used: Callable[[bytes], int | None] = self.datapath.last_used().get
        else:
            last_used = self.datapath.last_used_of
        for start in range(0, len(due), EXPIRY_BATCH):
            if self._stop.is_set():
                return
            time.sleep(0)  # let a woken packet thread have the GIL now, not at the end of a switch interval
            idle_out, gone, in_use, later = [], [], [], []
            for raw, flow in due[start : start + EXPIRY_BATCH]:
                used_ns = last_used(raw)  # bpf_ktime_get_ns: the clock of time.monotonic; 0: not used yet
                now = time.monotonic()
                if used_ns is None:
                    gone.append((raw, flow))
                    continue
                active = max(used_ns / 1e9, flow.created)
                if now - active > self._timeout(flow):
                    idle_out.append((raw, flow))
                    continue
                if flow.stateful and active > flow.refreshed and now - flow.refreshed >= REFRESH_EVERY:
                    in_use.append(flow)
                later.append((raw, flow, active))
            with self.lock:
                for raw, flow in idle_out:
                    if self.book.holds(raw, flow):  # not replaced meanwhile
                        self._remove_flow(raw)
                        self.counters["flows_expired"] += 1
                for raw, flow in gone:
                    if self.book.holds(raw, flow) and raw not in self._pending:
                        self.book.pop(raw)
                now = time.monotonic()
                for flow in in_use:  # keep the conntrack/NAT state of flows in use alive
                    flow.refreshed = now
                    self.book.refreshed(flow.key, now)
                    for write in flow.result.state_writes:
                        self.flow_state.record(write.kind, write.key, write.value)
                for raw, flow, active in later:
                    if self.book.holds(raw, flow):
                        self.book.schedule(raw, self._next_look(flow, active))
        expired = self.flow_state.expired_keys()  # (filtered without the lock: tables may be large)
        with self.lock:
            self.flow_state.drop_expired(expired)
            idle_blocks = self.snat_blocks.idle_blocks(2 * self.stateful_idle_timeout) if self.snat_blocks else []
        for block in idle_blocks:  # (a store round trip each: outside the lock)
            assert self.snat_blocks is not None
            try:
                self.snat_blocks.release(*block)
            except Exception as exc:
                log.warning("releasing SNAT block %s: %s", block, exc)
        with self.lock:
            excess = len(self.book) - self.max_flows
            for raw in self.book.oldest(excess) if excess > 0 else []:
                self._remove_flow(raw)
                self.counters["flows_evicted"] += 1

    def _register_again(self, owned: dict[tuple[str, str], dict[str, Any]]) -> None:
        """(Writer thread) The store ended this agent's session while it was cut off: its liveness and the
        entries it had learned went with it. Announce the host again and write back what it learned, where
        no other host has written meanwhile."""
        log.warning("store session expired: registering host %s again", self.host_id)
        if self.snat_blocks is not None:
            with self.lock:
                self.snat_blocks.forget()  # its leases went with the session
        deadline = time.monotonic() + 60
        while not self._stop.is_set():
            try:
                self._register()
                break
            except Exception as exc:  # still reconnecting
                if time.monotonic() > deadline:
                    log.error("could not register host %s again: %s", self.host_id, exc)
                    return
                time.sleep(0.5)
        for (table, key), entry in owned.items():
            if self._owned.get((table, key)) is entry and self.store.state_get(table, key) is None:
                self.store.state_put(table, key, entry, owner=self.session)

    # --- adoption -----------------------------------------------------------------------------------
    def _adopt_flows(self) -> None:
        """Flows an earlier agent left in the kernel: re-simulated on the current topology to learn why they
        exist. Those that still give the same actions are kept (their packets never stopped); others are
        replaced by the current answer, or removed.

        The learned tables the earlier agent used may be gone with its session; the kernel flows carry what
        it learned, so it is learned back from them first: a flow entering a bridge port says where its
        source MAC lives, and a routed flow's destination MAC is its next hop's ARP entry."""
        if not self.datapath.adopted:
            return
        adopted, old_links = [], []
        for key, value in list(self.datapath.flows()):
            if key.in_port == LINK_PORT:  # an earlier agent's flood links: the flows that name them are
                old_links.append(key)  # replaced by ones naming this agent's own, then they go
                self._next_link_set = max(self._next_link_set, key.ip_src + 1)
                continue
            port_id = self.port_of_ifindex.get(key.in_port)
            if port_id is None:
                self.datapath.remove(key)
                self.counters["adopt_removed"] += 1
                continue
            match = _match_of_key(key, port_id)
            port = self.snapshot.ports.get(port_id)
            src = match.peek("eth_src")
            if port is not None and port["type"] == "bridge" and not is_multicast_mac(src):
                self._learn([LearnWrite("mac", (port["device_id"], src, match.peek("vlan")), port_id)])
            adopted.append((key, value, port_id))
        for key, value, port_id in adopted:
            result = simulate(_match_of_key(key, port_id), self.snapshot, self.learned, self.flow_state, trace=False)
            if result.verdict is Verdict.PARK and result.park_until and value.act.flags & Action.SET_ETH_DST:
                _, router, ip = result.park_until
                mac = ":".join(f"{b:02x}" for b in bytes(value.act.eth_dst))
                self._learn([LearnWrite("arp", (router, ip_to_int(ip)), mac)])
                result = simulate(
                    _match_of_key(key, port_id), self.snapshot, self.learned, self.flow_state, trace=False
                )
            if result.verdict not in (Verdict.OUTPUT, Verdict.FLOOD, Verdict.DROP) or result.generated:
                self.datapath.remove(key)
                self.counters["adopt_removed"] += 1
                continue
            self._record_state(result.state_writes)
            self.wildcard.insert(result)
            fresh = self._value_of(result, self._outputs(result))
            if fresh[: ctypes.sizeof(FlowActions)] != bytes(value.act):
                self.datapath.install(key, fresh)
                self.counters["adopt_replaced"] += 1
            else:
                self.counters["adopt_kept"] += 1
            flow = KernelFlow(bytes(key), result, stateful=bool(result.state_writes))
            self.book.add(flow, self._next_look(flow, flow.created))
            self._note_chain(flow.key, fresh)
        for key in old_links:
            self.datapath.remove(key)

    # --- the store writer -----------------------------------------------------------------------------
    def _writer(self) -> None:
        while True:
            job = self._writes.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # the store is away: the entry is learned again by the next packet
                self.counters["store_write_errors"] += 1
                log.warning("writing learned state failed", exc_info=True)

    # --- what `kumo flows` and `kumo agent stats` show --------------------------------------------------
    def describe_flows(self) -> list[dict[str, Any]]:
        with self.lock:
            names = {index: self.bindings.get(port, port) for port, index in self.ifindex_of_port.items()}
            now_ns = time.monotonic_ns()
            rows = []
            flows = list(self.datapath.flows())
            links = {(key.ip_src, key.ip_dst): value.act for key, value in flows if key.in_port == LINK_PORT}
            for key, value in flows:
                if key.in_port == LINK_PORT:
                    continue  # (shown within the floods that follow them)
                flow = self.book.get(bytes(key))
                rows.append(
                    {
                        "in_port": names.get(key.in_port, str(key.in_port)),
                        "match": describe_key(key),
                        "actions": describe_actions(value.act, names, links),
                        "packets": value.packets,
                        "bytes": value.bytes,
                        "age_s": round(time.monotonic() - flow.created, 1) if flow else None,
                        "idle_s": round((now_ns - value.last_used_ns) / 1e9, 1) if value.last_used_ns else None,
                        "why": self._why(flow.result) if flow else ["(not known to this agent)"],
                    }
                )
            return rows

    def _why(self, result: SimulationResult) -> list[str]:
        snap = self.snapshot
        out = []
        for tag in sorted(t for t in result.tags if isinstance(t, str)):
            kind, _, ident = tag.partition(":")
            if kind == "device" and ident in snap.devices:
                dtype, device = snap.devices[ident]
                out.append(f"{dtype} {device.get('name') or ident}")
            elif kind == "port" and ident in snap.ports:
                out.append(f"port {snap.ports[ident].get('name') or ident}")
            elif kind == "chain":
                out.append(f"chain {snap.chains.get(ident, {}).get('name') or ident}")
            elif kind == "rule" and ident in snap.rules:
                rule = snap.rules[ident]
                chain = snap.chains.get(rule.get("chain_id", ""), {})
                order = chain.get("rule_ids", [])
                position = order.index(ident) + 1 if ident in order else "?"
                out.append(f"rule {rule.get('type')} #{position} of {chain.get('name') or rule.get('chain_id')}")
        return [*out, f"verdict {result.verdict.value} ({result.reason.value})"]

    def _storm_report(self) -> dict[str, Any]:
        held = self.storms.held(time.monotonic())
        return {
            "upcall_rate": self.storms.limit,
            "storm_upcall_rate": self.storms.storm_rate if self.storms.enabled else 0,  # 0: off
            "held": {self.port_of_ifindex.get(i, str(i)): h for i, h in held.items()},
        }

    def _state_counters(self) -> collections.Counter[str]:
        counters: collections.Counter[str] = collections.Counter()
        for source in (self.flow_state, self.snat_blocks):
            counters.update(getattr(source, "counters", {}))
        return counters

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "host_id": self.host_id,
                "uptime_s": round(time.time() - self.started, 1),
                "ports_bound": len(self.bindings),
                "ports_attached": len(self.ifindex_of_port),
                "kernel_flows": len(self.book),
                "wildcard_flows": len(self.wildcard),
                "key_index_entries": len(self.by_key),
                "parked": sum(len(w) for w in self.parked.values()),
                "invalidation_ms": self.invalidation_ms,
                "topology_changes_applied": list(self.topology_applied),
                "upcall_to_reinject_us": _percentiles(self.upcall_latency_us),
                "upcall_ring_most_waiting_kb": self.datapath.upcalls_most_waiting() // 1024,
                "storm_control": self._storm_report(),
                "garbage_collections": dict(zip(GENERATIONS, self.collector.collections, strict=True)),
                "garbage_collection_longest_ms": dict(
                    zip(GENERATIONS, (round(ms, 2) for ms in self.collector.longest_ms), strict=True)
                ),
                "agent": dict(sorted((self.counters + self._state_counters()).items())),
                "datapath": self.datapath.stats(),
            }


def _percentiles(samples: collections.deque[float]) -> dict[str, float | int]:
    """p50/p99/max of the last samples: the agent's share of a first packet's latency (from the kernel
    queueing the upcall to the re-injected packet handed back to the kernel)."""
    ordered = sorted(samples)
    if not ordered:
        return {"samples": 0}
    at = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)  # noqa: E731
    return {"samples": len(ordered), "p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1], 1)}


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _match_of_key(key: FlowKey, port_id: str) -> FlowMatch:
    """The FlowMatch of a kernel key (for adoption): the fields the kernel keys on, a TTL that decides
    nothing."""
    from kumo.datapath.actions import match_fields

    fields = match_fields(key)
    return FlowMatch(in_port=port_id, ip_ttl=64 if key.eth_type == 0x0800 else None, **fields)
