"""Changes from the store, applied by the packet thread between rounds.

The store's watch thread only queues changes and wakes the packet thread. A round starts by folding them in:
learned MAC/ARP entries (and resuming the packets parked for an ARP entry), hosts' liveness, and topology
changes, which give a new snapshot, follow this host's bindings, and remove exactly the flows tagged with
what changed (kumo.agent.invalidation), or every flow when a change cannot be pinned down."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kumo.agent.invalidation import tags_for
from kumo.agent.kernelflows import KernelFlows
from kumo.agent.learned import AgentLearned
from kumo.agent.ports import PortFollower
from kumo.agent.serve import UpcallServer
from kumo.agent.topology import TopologyCache
from kumo.agent.view import HostView
from kumo.topology.lbstatus import MEMBER_STATUS
from kumo.topology.state import ARP_TABLE, HOSTS_ALIVE, LEARNED_ROUTES, parse_arp_key
from kumo.topology.store.base import Change, StateChange, Store

APPLIED_KEPT = 16  # topology changes remembered for `kumo agent stats`


@dataclass(eq=False)
class StoreChanges:
    store: Store
    host_id: str
    view: HostView
    topology: TopologyCache
    learned: AgentLearned
    flows: KernelFlows
    ports: PortFollower
    server: UpcallServer
    counters: collections.Counter[str]
    wake: Callable[[], None]
    on_rebuild: Callable[[dict[str, dict[str, Any]]], None] | None = None  # told every new topology (the edge)
    invalidation_observer: Callable[[float], None] | None = None  # (seconds: the metrics' histogram)
    _events: collections.deque[tuple[float, Change | StateChange]] = field(
        default_factory=collections.deque, init=False
    )
    # store notification -> dependent flows removed (ms), and the last topology changes applied: when, and how
    # many flows they removed
    invalidation_ms: dict[str, float] = field(default_factory=lambda: {"last": 0.0, "max": 0.0}, init=False)
    topology_applied: collections.deque[dict[str, float]] = field(
        default_factory=lambda: collections.deque(maxlen=APPLIED_KEPT), init=False
    )

    def queue(self, event: Change | StateChange) -> None:
        """(Store watch thread) Queue a change for the packet thread and wake it."""
        self._events.append((time.monotonic(), event))
        self.wake()

    def apply(self) -> None:
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
            if isinstance(event, StateChange) and event.table == MEMBER_STATUS:  # from the pool's checker
                pool_tag = self.topology.apply_member_status(event)
                if pool_tag is not None:
                    topology_changed = True
                    tags = None if tags is None else tags | {pool_tag}
                continue
            if isinstance(event, StateChange) and event.table == LEARNED_ROUTES:  # from BGP, on any edge host
                topology_changed = True
                tags = None if tags is None else tags | {self.topology.apply_learned_route(event)}
                continue
            if isinstance(event, StateChange):
                tag = self.learned.apply(event)
                if tag is not None:
                    self.flows.invalidate(tag)
                if event.new is not None and event.table == ARP_TABLE:
                    self.server.resume(("arp", *parse_arp_key(event.key)))
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
            self.rebuild()
            if tags is None:
                self.flows.invalidate_all()
            else:
                for tag in tags:
                    self.flows.invalidate(tag)
            # wall-clock time, comparable across the hosts of one machine (bench/convergence_bench.py)
            self.topology_applied.append({"at": time.time(), "flows_removed": self.counters["flows_removed"] - removed})
        if first is not None:
            took = (time.monotonic() - first) * 1000
            if self.invalidation_observer is not None:
                self.invalidation_observer(took / 1000)
            self.invalidation_ms = {"last": round(took, 2), "max": round(max(took, self.invalidation_ms["max"]), 2)}

    def _routes_via(self, host_id: str) -> set[str]:
        """The tags of the routes whose next hop may be a port of `host_id` (they depend on its liveness)."""
        return {f"routes:{r}" for r in self.topology.routers_via(host_id)}

    def rebuild(self) -> None:
        """A new snapshot of the topology, and the bindings of this host's ports followed."""
        self.flows.by_key.clear()  # (its kernel actions were made from the old snapshot, tunnels and interfaces)
        view = self.view
        view.snapshot = self.topology.snapshot()
        view.tunnel_peers = self.topology.tunnel_peers(self.host_id)
        self.flows.datapath.set_tunnel_peers(set(view.tunnel_peers.values()))  # (the VXLAN program's filter)
        view.stateful_hosts = self.topology.stateful_hosts(view.snapshot)
        self.flows.follow_stateful_devices(view.snapshot)
        self.ports.follow_bindings()
        if self.on_rebuild is not None:
            self.on_rebuild(self.topology.objects)
