"""The agent's standing in the store: its session (which carries the host's liveness and owns the MAC/ARP
entries it learned), registration, and the writer thread that writes learned entries so that the packet path
never waits on the network. When the store ends the session while the agent was cut off, the agent
registers again and writes back what it had learned, where no other host has written meanwhile."""

from __future__ import annotations

import collections
import functools
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from kumo.flowstate.snat_blocks import SnatBlocks
from kumo.topology.state import register_host
from kumo.topology.store.base import Session, Store

log = logging.getLogger("kumo.agent")

REGISTER_AGAIN_FOR = 60.0  # seconds a re-registration keeps trying after the session expired


class StoreLink:
    def __init__(
        self,
        store: Store,
        host_id: str,
        tunnel_ip: str | None,
        lock: threading.RLock,
        stop: threading.Event,
        counters: collections.Counter[str],
    ) -> None:
        self.store = store
        self.host_id = host_id
        self.tunnel_ip = tunnel_ip  # reported in the host's addresses; zones' members name the address used
        self.lock = lock
        self.stop = stop
        self.counters = counters
        self.session: Session | None = None
        self.snat_blocks: SnatBlocks | None = None  # its leases go with the session (set by the agent)
        self._writes: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._owned: dict[tuple[str, str], dict[str, Any]] = {}  # state entries this agent wrote (re-written
        self._expiries = 0  # after its store session expired)

    def open(self) -> None:
        """Open the session and announce this host (its liveness lives with the session)."""
        self.session = self.store.open_session()
        self.register()

    def register(self) -> None:
        assert self.session is not None
        addresses = [self.tunnel_ip] if self.tunnel_ip else []
        register_host(self.store, self.session, self.host_id, name=socket.gethostname(), addresses=addresses)

    def put_state(self, table: str, key: str, entry: dict[str, Any]) -> None:
        """Write a learned entry behind the packet path, owned by this agent's session."""
        self._owned[(table, key)] = entry
        self._writes.put(functools.partial(self.store.state_put, table, key, entry, owner=self.session))

    def close_session(self) -> None:
        """Close the store session (an abandoned start: a running agent keeps it, see Agent.stop)."""
        if self.session is not None:
            self.session.close()
            self.session = None

    def check_session(self) -> None:
        """(Packet thread, housekeeping) If the store expired the session since the last look, register again
        and write back what this agent owns, from the writer thread."""
        if self.session is not None and self.session.expiries != self._expiries:
            self._expiries = self.session.expiries
            self.counters["store_session_expired"] += 1
            self._writes.put(functools.partial(self._register_again, dict(self._owned)))

    def _register_again(self, owned: dict[tuple[str, str], dict[str, Any]]) -> None:
        """(Writer thread) The store ended this agent's session while it was cut off: its liveness and the
        entries it had learned went with it. Announce the host again and write back what it learned, where
        no other host has written meanwhile."""
        log.warning("store session expired: registering host %s again", self.host_id)
        if self.snat_blocks is not None:
            with self.lock:
                self.snat_blocks.forget()  # its leases went with the session
        deadline = time.monotonic() + REGISTER_AGAIN_FOR
        while not self.stop.is_set():
            try:
                self.register()
                break
            except Exception as exc:  # still reconnecting
                if time.monotonic() > deadline:
                    log.error("could not register host %s again: %s", self.host_id, exc)
                    return
                time.sleep(0.5)
        for (table, key), entry in owned.items():
            if self._owned.get((table, key)) is entry and self.store.state_get(table, key) is None:
                self.store.state_put(table, key, entry, owner=self.session)

    def run_writer(self) -> None:
        """The writer thread: store writes one at a time until `close_writer`."""
        while True:
            job = self._writes.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # the store is away: the entry is learned again by the next packet
                self.counters["store_write_errors"] += 1
                log.warning("writing learned state failed", exc_info=True)

    def close_writer(self) -> None:
        self._writes.put(None)
