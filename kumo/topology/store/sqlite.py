"""Embedded store: one SQLite file (WAL) and in-process watches, for `kumo up` on a single machine.

Everything lives in the file, so a topology survives a restart. Owned state entries belong to sessions
of this process only: entries left by a previous process are dropped on open (their owners are gone).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from kumo.topology.errors import KumoError
from kumo.topology.indexes import INDEX_VERSION, index_entries, indexed
from kumo.topology.store.base import (
    Change,
    ChangeCallback,
    Check,
    Create,
    Delete,
    Obj,
    Op,
    Session,
    StateCallback,
    StateChange,
    Store,
    Update,
    Versioned,
    Watch,
    WatchHub,
    already_exists,
    check_expected_version,
    not_found,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS state (
    tbl TEXT NOT NULL, key TEXT NOT NULL, owner TEXT, data TEXT NOT NULL,
    PRIMARY KEY (tbl, key)
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS idx (
    kind TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, id TEXT NOT NULL,
    PRIMARY KEY (kind, field, value, id)
) WITHOUT ROWID;
"""


class _EmbeddedSession(Session):
    def __init__(self, store: SqliteStore) -> None:
        self.id = uuid.uuid4().hex
        self._store = store
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._store._drop_owned(self.id)


class SqliteStore(Store):
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._hub = WatchHub(f"sqlite:{self.path}")
        row = self._db.execute("SELECT value FROM meta WHERE name='seq'").fetchone()
        self._seq = int(row[0]) if row else 0
        # Owners of entries found on disk were sessions of a process that is gone.
        self._db.execute("DELETE FROM state WHERE owner IS NOT NULL")
        self._sessions: set[str] = set()
        self.ensure_index()

    # --- objects -------------------------------------------------------------------------------------
    def get_versioned(self, kind: str, obj_id: str) -> Versioned:
        with self._lock:
            row = self._db.execute("SELECT data, version FROM objects WHERE kind=? AND id=?", (kind, obj_id)).fetchone()
        if row is None:
            raise not_found(kind, obj_id)
        return Versioned(json.loads(row[0]), row[1])

    def list_versioned(self, kind: str) -> dict[str, Versioned]:
        with self._lock:
            rows = self._db.execute("SELECT id, data, version FROM objects WHERE kind=?", (kind,)).fetchall()
        return {r[0]: Versioned(json.loads(r[1]), r[2]) for r in rows}

    def get_many(self, kind: str, ids: Iterable[str]) -> dict[str, Versioned]:
        wanted = list(ids)
        out: dict[str, Versioned] = {}
        with self._lock:
            for start in range(0, len(wanted), 500):  # SQLite bounds the number of parameters of a query
                chunk = wanted[start : start + 500]
                rows = self._db.execute(
                    f"SELECT id, data, version FROM objects WHERE kind=? AND id IN ({','.join('?' * len(chunk))})",
                    (kind, *chunk),
                ).fetchall()
                out.update((r[0], Versioned(json.loads(r[1]), r[2])) for r in rows)
        return out

    def list_ids(self, kind: str) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT id FROM objects WHERE kind=? ORDER BY id", (kind,)).fetchall()
        return [r[0] for r in rows]

    # --- indexes -------------------------------------------------------------------------------------------
    def index_ids(self, kind: str, fname: str, value: str) -> set[str] | None:
        if not indexed(kind, fname):
            return None
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM idx WHERE kind=? AND field=? AND value=?", (kind, fname, value)
            ).fetchall()
        return {r[0] for r in rows}

    def ensure_index(self) -> None:
        """Rebuilt in one transaction when the file was written by a version that indexed other fields."""
        version = int(INDEX_VERSION[:15], 16)
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name='index'").fetchone()
            if row is not None and row[0] == version:
                return
            with self._immediate():
                self._db.execute("DELETE FROM idx")
                for kind, obj_id, data in self._db.execute("SELECT kind, id, data FROM objects").fetchall():
                    self._reindex(kind, obj_id, None, json.loads(data))
                self._set_meta("index", version)

    def _set_meta(self, name: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta(name, value) VALUES(?, ?) ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            (name, value),
        )

    @contextlib.contextmanager
    def _immediate(self) -> Iterator[None]:
        """One write transaction of the file (the caller holds the lock): committed, or rolled back on error."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _reindex(self, kind: str, obj_id: str, old: Obj | None, new: Obj | None) -> None:
        before, after = index_entries(kind, old), index_entries(kind, new)
        self._db.executemany(
            "DELETE FROM idx WHERE kind=? AND field=? AND value=? AND id=?",
            [(kind, f, v, obj_id) for f, v in before - after],
        )
        self._db.executemany(
            "INSERT OR IGNORE INTO idx(kind, field, value, id) VALUES(?, ?, ?, ?)",
            [(kind, f, v, obj_id) for f, v in after - before],
        )

    def transaction(self, ops: Sequence[Op]) -> None:
        changes: list[Change] = []
        with self._lock:
            with self._immediate():
                for op in ops:
                    change = self._apply(op)
                    if change is not None:
                        changes.append(change)
                        self._reindex(change.kind, change.id, change.old, change.new)
                seq = self._seq + 1 if changes else self._seq
                if changes:
                    self._set_meta("seq", seq)
            self._seq = seq
            # Published under the lock that serialises commits, so watchers see commit order.
            self._hub.publish(Change(c.op, c.kind, c.id, c.old, c.new, seq) for c in changes)

    def _current(self, kind: str, obj_id: str) -> tuple[Obj, int] | None:
        row = self._db.execute("SELECT data, version FROM objects WHERE kind=? AND id=?", (kind, obj_id)).fetchone()
        return None if row is None else (json.loads(row[0]), row[1])

    def _apply(self, op: Op) -> Change | None:
        current = self._current(op.kind, op.id)
        if isinstance(op, Create):
            if current is not None:
                raise already_exists(op.kind, op.id)
            self._db.execute(
                "INSERT INTO objects(kind, id, version, data) VALUES(?, ?, 0, ?)",
                (op.kind, op.id, json.dumps(op.value)),
            )
            return Change("create", op.kind, op.id, None, op.value)
        if current is None:
            raise not_found(op.kind, op.id)
        old, version = current
        check_expected_version(op.kind, op.id, op.version, version)
        if isinstance(op, Update):
            self._db.execute(
                "UPDATE objects SET data=?, version=version+1 WHERE kind=? AND id=?",
                (json.dumps(op.value), op.kind, op.id),
            )
            return Change("update", op.kind, op.id, old, op.value)
        if isinstance(op, Delete):
            self._db.execute("DELETE FROM objects WHERE kind=? AND id=?", (op.kind, op.id))
            return Change("delete", op.kind, op.id, old, None)
        assert isinstance(op, Check)
        return None

    def watch(self, callback: ChangeCallback, kind: str | None = None, obj_id: str | None = None) -> Watch:
        return self._hub.subscribe(callback, kind, obj_id)

    # --- state tables ----------------------------------------------------------------------------------
    def open_session(self) -> Session:
        session = _EmbeddedSession(self)
        with self._lock:
            self._sessions.add(session.id)
        return session

    def state_put(self, table: str, key: str, value: Obj, owner: Session | None = None) -> None:
        owner_id = None
        if owner is not None:
            if owner.id not in self._sessions:
                raise KumoError(f"session {owner.id} is closed; open a new session to own entries")
            owner_id = owner.id
        with self._lock:
            row = self._db.execute("SELECT data FROM state WHERE tbl=? AND key=?", (table, key)).fetchone()
            self._db.execute(
                "INSERT INTO state(tbl, key, owner, data) VALUES(?, ?, ?, ?) "
                "ON CONFLICT(tbl, key) DO UPDATE SET owner=excluded.owner, data=excluded.data",
                (table, key, owner_id, json.dumps(value)),
            )
            self._hub.publish([StateChange(table, key, json.loads(row[0]) if row else None, value)])

    def state_claim(self, table: str, key: str, value: Obj, owner: Session) -> bool:
        if owner.id not in self._sessions:
            raise KumoError(f"session {owner.id} is closed; open a new session to own entries")
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO state(tbl, key, owner, data) VALUES(?, ?, ?, ?) ON CONFLICT(tbl, key) DO NOTHING",
                (table, key, owner.id, json.dumps(value)),
            )
            if cursor.rowcount != 1:
                return False
            self._hub.publish([StateChange(table, key, None, value)])
            return True

    def state_delete(self, table: str, key: str) -> None:
        with self._lock:
            row = self._db.execute("SELECT data FROM state WHERE tbl=? AND key=?", (table, key)).fetchone()
            if row is None:
                return
            self._db.execute("DELETE FROM state WHERE tbl=? AND key=?", (table, key))
            self._hub.publish([StateChange(table, key, json.loads(row[0]), None)])

    def state_list(self, table: str) -> dict[str, Obj]:
        with self._lock:
            rows = self._db.execute("SELECT key, data FROM state WHERE tbl=?", (table,)).fetchall()
        return {k: json.loads(d) for k, d in rows}

    def state_get(self, table: str, key: str) -> Obj | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM state WHERE tbl=? AND key=?", (table, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def state_watch(self, table: str, callback: StateCallback) -> Watch:
        return self._hub.subscribe_state(table, callback)

    def _drop_owned(self, owner_id: str) -> None:
        with self._lock:
            self._sessions.discard(owner_id)
            rows = self._db.execute("SELECT tbl, key, data FROM state WHERE owner=?", (owner_id,)).fetchall()
            self._db.execute("DELETE FROM state WHERE owner=?", (owner_id,))
            self._hub.publish([StateChange(t, k, json.loads(d), None) for t, k, d in rows])

    def close(self) -> None:
        self._hub.stop()
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"
