"""The host agent: one per host. `Agent` builds the parts and wires them; each part is a module of its own.

One upcall's journey, in the order of the modules:
  rounds.py       the packet thread: epoll on the upcall ring, a round of upcalls, housekeeping
  serve.py        one upcall: key index, wildcard table, or simulation; learning; parking
  sharing.py      the round's new flow state: durable (Redis) and pushed to peers before forwarding
  kernelflows.py  the round's flows installed in one call, first packets executed, flows booked
  egress.py       where a result's packets leave: a local interface or a VXLAN tunnel
  generated.py    packets the simulation made (ARP/DHCP replies, ICMP errors), and parked packets
Around it: changes.py (store changes, invalidation by tags), ports.py (bindings and interfaces),
expiry.py (idle expiry, state refresh, eviction), liveness.py (store session, registration, writer thread),
adoption.py (a restarted agent takes over the kernel's flows), storms.py (storm control's agent side),
arpanswers.py (ARP answered in the kernel for established paths, so that they outlive the agent),
report.py (`kumo flows`), control.py (the control socket), collector.py (garbage collection between rounds).

Threads: the packet thread owns the datapath, the snapshot, the wildcard table and the kernel flows (it
serves upcalls, applies topology and learned-state changes between them, and does housekeeping); the
store's watch thread only queues changes and wakes it; a writer thread writes learned entries to the store
so that the packet path never waits on the network; the expiry thread reads the kernel's last-use times and
removes idle flows in batches; the control socket serves `kumo flows` and `kumo agent stats`. All of them
take the agent's one lock to touch shared state.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from kumo.agent.adoption import adopt_flows
from kumo.agent.arpanswers import ArpAnswers
from kumo.agent.changes import StoreChanges
from kumo.agent.collector import GENERATIONS, Collector
from kumo.agent.control import ControlServer
from kumo.agent.egress import Egress
from kumo.agent.expiry import Expiry
from kumo.agent.generated import Emitter, Parking
from kumo.agent.kernelflows import KernelFlows
from kumo.agent.lbstats import PoolStats
from kumo.agent.lbstats import read as read_pool_stats
from kumo.agent.learned import AgentLearned
from kumo.agent.liveness import StoreLink
from kumo.agent.metrics import AgentCollector, Timings, serve_metrics
from kumo.agent.ports import PortFollower
from kumo.agent.portstats import PortStats
from kumo.agent.portstats import read as read_port_stats
from kumo.agent.publish import StatsPublisher, StatsSource
from kumo.agent.pushkey import ClusterKey
from kumo.agent.report import flow_rows, percentiles
from kumo.agent.rounds import PacketLoop, Waker
from kumo.agent.serve import UpcallServer
from kumo.agent.sharing import StateSharing
from kumo.agent.storms import StormMonitor
from kumo.agent.topology import TopologyCache
from kumo.agent.view import HostView
from kumo.datapath.conntrack import KernelConntrack
from kumo.datapath.datapath import Datapath
from kumo.datapath.layout import DEFAULT_MAX_MASKS_PER_PORT, TunnelCount
from kumo.edge.manager import EdgeManager
from kumo.flowstate.local import LocalFlowState
from kumo.flowstate.redis import RedisFlowState
from kumo.flowstate.snat_blocks import SnatBlocks
from kumo.lb.manager import HealthManager
from kumo.packet import int_to_ip
from kumo.topology.lbstatus import MEMBER_STATUS, POOL_STATS
from kumo.topology.portstats import PORT_STATS
from kumo.topology.state import ARP_TABLE, HOSTS_ALIVE, LEARNED_ROUTES, MAC_TABLE
from kumo.topology.store.base import Store

log = logging.getLogger("kumo.agent")

GIL_SWITCH_INTERVAL = 0.0005  # seconds: how long a woken packet thread may wait for a busy thread's GIL


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
        max_masks_per_port: int = DEFAULT_MAX_MASKS_PER_PORT,
        datapath: Datapath | None = None,
        tunnel_ip: str | None = None,
        flow_state: LocalFlowState | RedisFlowState | None = None,
        metrics_listen: str | None = None,
    ) -> None:
        self.store = store
        self.metrics_listen = metrics_listen
        self.metrics_registry = CollectorRegistry()
        self.timings = Timings(self.metrics_registry)
        self._metrics_server: Any = None
        self.host_id = host_id
        self.state_dir = state_dir
        self.datapath = datapath = datapath or Datapath()
        self.flow_state = flow_state = flow_state or LocalFlowState()
        self.counters: collections.Counter[str] = collections.Counter()
        self.lock = threading.RLock()
        self._stop = threading.Event()
        counters = self.counters
        self.store_link = StoreLink(store, host_id, tunnel_ip, self.lock, self._stop, counters)
        self.snat_blocks: SnatBlocks | None = None  # with shared flow state: SNAT ports leased per host
        if isinstance(flow_state, RedisFlowState):
            self.snat_blocks = SnatBlocks(store, lambda: self.store_link.session, host_id, flow_state.local)
            flow_state.allocator = self.snat_blocks
            self.store_link.snat_blocks = self.snat_blocks
        self.view = view = HostView()
        self.topology = TopologyCache()
        self.learned = AgentLearned()
        self.flows = flows = KernelFlows(datapath, counters, idle_timeout, stateful_idle_timeout, max_masks_per_port)
        # the kernel answers ARP for the paths of booked flows (kumo.agent.arpanswers)
        self.arp_answers = ArpAnswers(datapath, view, self.learned, flow_state, counters)
        flows.book.observers.append(self.arp_answers)
        self.egress = egress = Egress(host_id, view, datapath, counters)
        self.parking = Parking(counters)
        self.push_key = ClusterKey(store)
        self.sharing = StateSharing(host_id, view, flows, flow_state, counters, push_key=lambda: self.push_key.key)
        self.server = UpcallServer(
            host_id=host_id,
            view=view,
            flows=flows,
            egress=egress,
            emitter=Emitter(view, datapath, egress, self.learned, flow_state, counters),
            parking=self.parking,
            sharing=self.sharing,
            learned=self.learned,
            flow_state=flow_state,
            store_link=self.store_link,
            counters=counters,
        )
        self.port_stats = PortStats(view, datapath, upcalls=self.server.port_upcalls)
        flows.book.observers.append(self.port_stats)
        self.ports = PortFollower(host_id, view, datapath, flows, counters)
        self.waker = Waker()
        self.changes = StoreChanges(
            store=store,
            host_id=host_id,
            view=view,
            topology=self.topology,
            learned=self.learned,
            flows=flows,
            ports=self.ports,
            server=self.server,
            counters=counters,
            wake=self.waker.wake,
        )
        self.edge = EdgeManager(
            store=store,
            host_id=host_id,
            session=lambda: self.store_link.session,
            datapath=datapath,
            lock=self.lock,
            counters=counters,
            run_dir=state_dir,
        )
        self.pool_stats = PoolStats(datapath, view)
        flows.book.observers.append(self.pool_stats)
        self.health = HealthManager(store, host_id, lambda: self.store_link.session, counters, state_dir)
        self.publisher = StatsPublisher(
            store,
            host_id,
            lambda: self.store_link.session,
            counters,
            [
                StatsSource(POOL_STATS, "pools", self._read_pool_stats, "pool_stats_publish_errors"),
                StatsSource(PORT_STATS, "ports", self._read_port_stats, "port_stats_publish_errors"),
            ],
        )
        self.changes.on_rebuild = self._topology_rebuilt
        self.changes.invalidation_observer = self.timings.invalidation.observe
        flows.latency_observer = self.timings.upcall.observe
        self.metrics_registry.register(AgentCollector(self.stats, lambda: self.store_link.session is not None))
        self.storms = StormMonitor(datapath, view, counters)
        self.collector = Collector()
        self.packets = PacketLoop(
            lock=self.lock,
            stop=self._stop,
            waker=self.waker,
            datapath=datapath,
            changes=self.changes,
            sharing=self.sharing,
            server=self.server,
            flows=flows,
            ports=self.ports,
            parking=self.parking,
            storms=self.storms,
            store_link=self.store_link,
            collector=self.collector,
            counters=counters,
        )
        self.expiry = Expiry(
            lock=self.lock,
            stop=self._stop,
            datapath=datapath,
            flows=flows,
            flow_state=flow_state,
            snat_blocks=self.snat_blocks,
            max_flows=max_flows,
            counters=counters,
        )
        self._threads: list[threading.Thread] = []
        self._watches: list[Any] = []
        self._control: ControlServer | None = None
        self.started = time.time()
        self._switch_interval = sys.getswitchinterval()  # the process's own, given back on stop

    # --- life cycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        # The packet thread shares the GIL with the API, expiry and store threads: a woken packet thread waits
        # for the GIL until the running thread lets go, at the latest after the switch interval (5 ms by
        # default; expiry may have thousands of flows due at once). Given back on stop.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self.store_link.open()
        self.datapath.ct_timeout_s = int(self.flow_state.ttl)
        self.datapath.start()
        if isinstance(self.flow_state, LocalFlowState):  # (shared state: the agent keeps tracking, Redis holds it)
            self.flow_state.kernel = KernelConntrack(self.datapath.fds["kumo_conntrack"], self.flow_state.ttl)
            self.flows.kernel_conntrack = True
        self.push_key.open()
        self.sharing.open()
        queue_change = self.changes.queue
        self._watches = [
            self.store.watch(queue_change),
            self.store.state_watch(MAC_TABLE, queue_change),
            self.store.state_watch(ARP_TABLE, queue_change),
            self.store.state_watch_keys(HOSTS_ALIVE, queue_change),
            self.store.state_watch(LEARNED_ROUTES, queue_change),
            self.store.state_watch(MEMBER_STATUS, queue_change),
        ]
        with self.lock:
            self.learned.load(self.store)
            self.topology.load(self.store)
            self.changes.rebuild()
            self.datapath.keep_vnis(self.egress.local_vnis())  # (adopted entries of ports no longer here go)
            adopt_flows(self.datapath, self.view, self.flows, self.server, self.egress, self.counters)
        self._control = ControlServer(self, self.state_dir / "agent.sock")
        threads: tuple[tuple[Callable[[], None], str], ...] = (
            (self.packets.run, "kumo-packets"),
            (self.store_link.run_writer, "kumo-writer"),
            (self.expiry.run, "kumo-expiry"),
        )
        for target, name in threads:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._control.start()
        self.edge.start()
        self.health.start()
        self.publisher.start()
        if self.metrics_listen:
            self._metrics_server = serve_metrics(self.metrics_listen, self.metrics_registry)
        self.collector.take_over()  # the packet thread collects garbage between rounds from now on
        log.info(
            "agent for host %s: %d ports bound here, %d kernel flows %s",
            self.host_id,
            len(self.view.bindings),
            len(self.flows.book),
            "adopted" if self.datapath.adopted else "(fresh datapath)",
        )

    def _topology_rebuilt(self, objects: dict[str, dict[str, Any]]) -> None:
        """(Packet thread) The threads that follow the topology on their own are told the new one."""
        self.edge.update(objects)
        self.health.update(objects)

    def _read_port_stats(self) -> dict[str, dict[str, Any]]:
        """(The port statistics thread) The book's copy under the lock, the kernel and netlink read without it."""
        with self.lock:
            copy = self.port_stats.copy()
        return read_port_stats(self.datapath, copy)

    def _read_pool_stats(self) -> dict[str, dict[str, dict[str, int]]]:
        """(The health thread) Pool statistics: the book's copy under the lock, the kernel read without it."""
        with self.lock:
            pool_flows, done = self.pool_stats.copy()
        return read_pool_stats(self.datapath, pool_flows, done)

    def stop(self) -> None:
        """Stop serving. Kernel flows stay and keep forwarding (a restart adopts them).

        The store session is not closed: the host stays alive, and the MAC/ARP entries and SNAT blocks it
        owns stay, until the store times the session out (ZooKeeper: 10 s) or a restarted agent takes them
        over. Closing it would make every other host drop the flows that use those entries, and stall them
        until this agent is back to learn them again."""
        self.edge.stop()  # (first: its sessions close while the datapath still carries their NOTIFICATION)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server = None
        self.health.stop()  # (its claims given back: another agent checks at once)
        self.publisher.stop()
        self._stop.set()
        self.waker.wake()
        for watch in self._watches:
            watch.cancel()
        self.store_link.close_writer()
        for thread in self._threads:
            thread.join(timeout=5)
        self.collector.give_back()
        sys.setswitchinterval(self._switch_interval)
        if self._control is not None:
            self._control.stop()
        with self.lock:
            self.datapath.close()
            self.sharing.close()
            self.push_key.close()
            close = getattr(self.flow_state, "close", None)
            if close is not None:
                close()
        self.waker.close()

    def abandon_start(self) -> None:
        """Let go of what a start that failed partway took (the store stopped answering), quietly, so that a
        new agent can start from scratch: as a stop, and the store session closed too (it may have
        registered the host). Kernel flows and programs stay, as on any stop."""
        for step in (self.stop, self.store_link.close_session):
            with contextlib.suppress(Exception):
                step()

    # --- what `kumo flows` and `kumo agent stats` show (kumo.agent.control.AgentQueries) --------------
    def describe_flows(self) -> list[dict[str, Any]]:
        with self.lock:
            return flow_rows(self.datapath, self.view, self.flows.book, self.flows.masks)

    def stats(self) -> dict[str, Any]:
        tunnel_peers = self._tunnel_peers()  # (one BPF read per peer: without the packet thread's lock)
        with self.lock:
            flows = self.flows
            return {
                "host_id": self.host_id,
                "uptime_s": round(time.time() - self.started, 1),
                "ports_bound": len(self.view.bindings),
                "ports_attached": len(self.view.ifindex_of_port),
                "kernel_flows": len(flows.book),
                "wildcard_flows": len(flows.wildcard),
                "arp_answers": len(self.arp_answers),
                "key_index_entries": len(flows.by_key),
                "megaflow_masks": flows.masks.report(),
                "parked": len(self.parking),
                "invalidation_ms": self.changes.invalidation_ms,
                "topology_changes_applied": list(self.changes.topology_applied),
                "upcall_to_reinject_us": percentiles(flows.upcall_latency_us),
                "upcall_ring_most_waiting_kb": self.datapath.upcalls_most_waiting() // 1024,
                "storm_control": self.storms.report(time.monotonic()),
                "tunnel_peers": tunnel_peers,
                "ports": self.publisher.latest[PORT_STATS],  # (as read last, every 5 s: kumo.agent.portstats)
                "bgp_peers": self.edge.report(),
                "health_checks": self.health.report(),
                "garbage_collections": dict(zip(GENERATIONS, self.collector.collections, strict=True)),
                "garbage_collection_longest_ms": dict(
                    zip(GENERATIONS, (round(ms, 2) for ms in self.collector.longest_ms), strict=True)
                ),
                "agent": dict(sorted((self.counters + self._state_counters()).items())),
                "datapath": self.datapath.stats(),
            }

    def _tunnel_peers(self) -> dict[str, dict[str, Any]]:
        """Per tunnel peer host: its underlay address, and the packets and bytes tunnelled to and from it."""
        hosts = {address: host for host, address in dict(self.view.tunnel_peers).items()}
        traffic = self.datapath.tunnel_traffic()
        out = {}
        for address in sorted(set(hosts) | set(traffic)):
            counts = traffic.get(address, dict.fromkeys(TunnelCount.FIELDS, 0))
            out[hosts.get(address, int_to_ip(address))] = {"address": int_to_ip(address), **counts}
        return out

    def _state_counters(self) -> collections.Counter[str]:
        counters: collections.Counter[str] = collections.Counter()
        for source in (self.flow_state, self.snat_blocks):
            counters.update(getattr(source, "counters", {}))
        return counters
