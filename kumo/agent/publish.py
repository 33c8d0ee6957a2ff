"""Publishing this host's statistics to the store: a thread that, every PUBLISH_EVERY_S, reads each source
(the pools' figures, kumo.agent.lbstats; the ports', kumo.agent.portstats) and writes the host's row of its
state table when the figures changed, or when the store session is new (a row is owned by the session that
wrote it, and went with an expired one). A source with nothing to say writes no row until it has something.

Store round trips and the kernel reads happen on this thread: never on the packet path."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kumo.topology.store.base import Session, Store

log = logging.getLogger("kumo.agent")

PUBLISH_EVERY_S = 5.0  # how fresh the API's pool and port statistics are (their answers say how old)


@dataclass(frozen=True)
class StatsSource:
    table: str  # the state table: <host id> = {"at", FIELD: what `read` answered}
    field: str
    read: Callable[[], dict[str, Any]]
    errors: str  # the agent counter of failed reads or writes (docs/counters.md)


class StatsPublisher:
    def __init__(
        self,
        store: Store,
        host_id: str,
        session: Callable[[], Session | None],
        counters: collections.Counter[str],
        sources: list[StatsSource],
    ) -> None:
        self.store = store
        self.host_id = host_id
        self.session = session
        self.counters = counters
        self.sources = sources
        self.latest: dict[str, dict[str, Any]] = {s.table: {} for s in sources}  # table -> as read last
        self._written: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}  # table -> (session seen, figures)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kumo-stats", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            for source in self.sources:
                try:
                    self.publish(source)
                except Exception:  # (the store away, or a bug: the figures are late, nothing else is affected)
                    self.counters[source.errors] += 1
                    log.exception("publishing %s failed; trying again in %.0f s", source.table, PUBLISH_EVERY_S)
            if self._stop.wait(PUBLISH_EVERY_S):
                return

    def publish(self, source: StatsSource) -> None:
        figures = self.latest[source.table] = source.read()
        session = self.session()
        if session is None:
            return
        seen = (id(session), session.expiries)  # (a session re-registered after an expiry is a new one)
        written = self._written.get(source.table)
        current = written is not None and written[0] == seen
        if (current and written is not None and written[1] == figures) or (not figures and not current):
            return
        self.store.state_put(source.table, self.host_id, {"at": time.time(), source.field: figures}, owner=session)
        self._written[source.table] = (seen, figures)
