"""The edge's state tables in the store (learned routes, peer states), kept equal to what the sessions hold.

Each sync writes the difference between what is wanted and what was written before, so a write that failed
(an unreachable store) is simply made by the next sync, and nothing is written twice. Entries are owned by
the agent's store session: when that session is replaced (it expired while the agent was cut off, and
its entries with it), everything is written again."""

from __future__ import annotations

from typing import Any

from kumo.topology.store.base import Obj, Session, Store


class StoreMirror:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.written: dict[str, dict[str, Obj]] = {}
        self._session: tuple[int, Any] | None = None  # (the session, its expiries) the writes were made in

    def sync(self, session: Session, wanted: dict[str, dict[str, Obj]]) -> None:
        """Make each table's entries `wanted[table]`; raises the store's error (KumoError) partway."""
        marker = (id(session), getattr(session, "expiries", 0))
        if marker != self._session:
            self.written, self._session = {}, marker
        for table, entries in wanted.items():
            written = self.written.setdefault(table, {})
            for key in [k for k in written if k not in entries]:
                self.store.state_delete(table, key)
                del written[key]
            for key, value in entries.items():
                if written.get(key) != value:
                    self.store.state_put(table, key, value, owner=session)
                    written[key] = value
