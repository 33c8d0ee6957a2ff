"""The packet thread: rounds.

The thread sleeps in epoll on the upcall ring, a wake-up pipe (store changes) and the state-push socket.
Each round, under the agent's lock:
  1. fold in the store's changes (kumo.agent.changes) and the state peers pushed (kumo.agent.sharing);
  2. read the ring, woken by it or not (a held port's upcalls do not wake the agent), and serve every upcall
     (kumo.agent.serve): other ports' first, then those of ports storm control holds;
  3. end the round: its new flow state made durable and pushed, its flows installed in one system call,
     their first packets executed, the flows booked (kumo.agent.kernelflows);
  4. now and then, housekeeping: the store session, interfaces, flood link sets, megaflow masks, storms,
     parked packets.
Then, outside the lock, Python's garbage collector runs if due (kumo.agent.collector)."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import threading
import time
from dataclasses import dataclass, field

from kumo.agent.changes import StoreChanges
from kumo.agent.collector import Collector
from kumo.agent.generated import Parking
from kumo.agent.kernelflows import KernelFlows
from kumo.agent.liveness import StoreLink
from kumo.agent.ports import PortFollower
from kumo.agent.serve import UpcallServer
from kumo.agent.sharing import StateSharing
from kumo.agent.storms import StormMonitor
from kumo.datapath.datapath import Datapath
from kumo.datapath.layout import UPCALL_HEAD

log = logging.getLogger("kumo.agent")

HOUSEKEEPING_PERIOD = 0.1  # seconds between housekeeping rounds (parked packets, interfaces)
POLL_TIMEOUT = 0.05  # s; also the longest a held port's upcall waits unread (kumo_ring_lazy)
FOLLOW_INTERFACES_EVERY = 1.0  # seconds between looks for interfaces that appeared or went
LINK_SETS_COLLECTED_EVERY = 5.0  # seconds between looks for flood link sets no flow names any more
MASKS_ORDERED_EVERY = 1.0  # seconds between two orderings of the megaflow masks by use (kumo.agent.masks)


class Waker:
    """A pipe that wakes the packet thread's epoll from other threads."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self._write_fd, False)

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed (stopping)
            os.write(self._write_fd, b"x")

    def drain(self) -> None:
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self._write_fd)


@dataclass(eq=False)
class PacketLoop:
    lock: threading.RLock
    stop: threading.Event
    waker: Waker
    datapath: Datapath
    changes: StoreChanges
    sharing: StateSharing
    server: UpcallServer
    flows: KernelFlows
    ports: PortFollower
    parking: Parking
    storms: StormMonitor
    store_link: StoreLink
    collector: Collector
    counters: collections.Counter[str]
    _next_follow: float = field(default=0.0, init=False)
    _next_link_collection: float = field(default=0.0, init=False)
    _next_mask_order: float = field(default=0.0, init=False)

    def run(self) -> None:
        ring = self.datapath.upcalls()
        pushed = self.sharing.fileno()
        poller = select.epoll()
        for fd in (ring.fileno(), self.waker.read_fd, pushed):
            if fd >= 0:
                poller.register(fd, select.EPOLLIN)
        next_housekeeping = 0.0
        while not self.stop.is_set():
            try:
                ready = {fd for fd, _ in poller.poll(POLL_TIMEOUT)}
                with self.lock:
                    if self.waker.read_fd in ready:
                        self.waker.drain()
                    self.changes.apply()
                    if pushed in ready:
                        self.sharing.receive()
                    # every round, woken by the ring or not: a held port's upcalls do not wake the agent
                    self._serve_held_last(ring.read())
                    self._end_round()
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
        held_ifindexes = self.storms.held_ifindexes
        if held_ifindexes and upcalls:
            others: list[bytes] = []
            held: list[bytes] = []
            for raw in upcalls:
                (held if UPCALL_HEAD.unpack_from(raw)[0] in held_ifindexes else others).append(raw)
            if held and others:
                self.server.serve_all(others)
                self._end_round()
                upcalls = held
        self.server.serve_all(upcalls)

    def _end_round(self) -> None:
        """Make this round's new flow state durable (shared store) and push it to the peers that may see the
        return traffic, then install the round's flows in one system call and execute their first packets.
        First, with shared flow state, the round's lookups are answered and its provisional results settled."""
        self.server.settle()
        dropped = self.sharing.end_round()
        self.flows.install_round(dropped)

    def _housekeeping(self, now: float) -> None:
        self.store_link.check_session()
        if now >= self._next_follow:
            self.ports.follow_interfaces()
            self._next_follow = now + FOLLOW_INTERFACES_EVERY
        if now >= self._next_link_collection:
            self.flows.collect_link_sets()
            self._next_link_collection = now + LINK_SETS_COLLECTED_EVERY
        if now >= self._next_mask_order:
            self.flows.maintain_masks()
            self._next_mask_order = now + MASKS_ORDERED_EVERY
        self.storms.sample_if_due(now)
        self.parking.expire(now)
