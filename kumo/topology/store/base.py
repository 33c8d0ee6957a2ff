"""The Store interface: every backend (embedded SQLite, ZooKeeper) offers exactly this contract.

Objects are JSON dicts addressed by (kind, id) with a version that increases on each write.
Writes can be grouped in a transaction that applies all operations or none. Watches deliver every
committed change, in commit order, with the old and the new value. State tables hold learned data
(MAC and ARP tables, liveness); an entry may be owned by a Session and vanishes when that session ends.
"""

from __future__ import annotations

import abc
import bisect
import builtins
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kumo.topology.errors import AlreadyExists, NotFound, VersionConflict
from kumo.topology.indexes import indexed, matches

Obj = dict[str, Any]


@dataclass(frozen=True)
class Create:
    kind: str
    id: str
    value: Obj


@dataclass(frozen=True)
class Update:
    """Replace an object's value; with `version`, only if it is still at that version."""

    kind: str
    id: str
    value: Obj
    version: int | None = None


@dataclass(frozen=True)
class Delete:
    kind: str
    id: str
    version: int | None = None


@dataclass(frozen=True)
class Check:
    """Assert that an object exists (and, with `version`, is unchanged) when the transaction commits."""

    kind: str
    id: str
    version: int | None = None


Op = Create | Update | Delete | Check


@dataclass(frozen=True)
class Versioned:
    value: Obj
    version: int


@dataclass(frozen=True)
class Change:
    """One committed change. `op` is "resync" when a watcher fell too far behind and must re-read."""

    op: Literal["create", "update", "delete", "resync"]
    kind: str
    id: str
    old: Obj | None
    new: Obj | None
    seq: int = 0


@dataclass(frozen=True)
class StateChange:
    table: str
    key: str
    old: Obj | None
    new: Obj | None


ChangeCallback = Callable[[Change], None]
StateCallback = Callable[[StateChange], None]


class Watch:
    """A registered watch; `cancel()` stops delivery."""

    def __init__(self, on_cancel: Callable[[Watch], None]) -> None:
        self._on_cancel = on_cancel
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._on_cancel(self)


class Session(abc.ABC):
    """A liveness scope: state entries written with `owner=session` vanish when it closes or expires."""

    id: str

    @abc.abstractmethod
    def close(self) -> None: ...

    # How many times the store ended this session on its own (ZooKeeper: it timed out while the client was
    # cut off). The session goes on under a new identity, but the entries it owned are gone: an owner that
    # sees this count move writes them again.
    expiries: int = 0


def not_found(kind: str, obj_id: str) -> NotFound:
    return NotFound(f"no {kind} with id {obj_id}")


def check_expected_version(kind: str, obj_id: str, expected: int | None, actual: int) -> None:
    if expected is not None and expected != actual:
        raise VersionConflict(f"{kind} {obj_id} changed concurrently (version {actual}, expected {expected}); retry")


def already_exists(kind: str, obj_id: str) -> AlreadyExists:
    return AlreadyExists(kind, obj_id)


@dataclass
class _Subscriber:
    watch: Watch
    callback: ChangeCallback
    kind: str | None
    obj_id: str | None

    def wants(self, change: Change) -> bool:
        if change.op == "resync":
            return self.kind is None or change.kind in ("*", self.kind)
        return (self.kind is None or self.kind == change.kind) and (self.obj_id is None or self.obj_id == change.id)


@dataclass
class WatchHub:
    """Fans changes out to subscribers on one dispatcher thread, preserving order.

    Callbacks run on that thread, never on the writer's: a slow watcher cannot stall a write, and a
    failing one is logged and counted instead of breaking delivery to the others.
    """

    name: str
    errors: int = 0
    _subs: list[_Subscriber] = field(default_factory=list)
    _state_subs: list[tuple[Watch, str, StateCallback]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _queue: list[Change | StateChange | None] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None

    def subscribe(self, callback: ChangeCallback, kind: str | None, obj_id: str | None) -> Watch:
        watch = Watch(self._remove)
        with self._lock:
            self._subs.append(_Subscriber(watch, callback, kind, obj_id))
        self._ensure_thread()
        return watch

    def subscribe_state(self, table: str, callback: StateCallback) -> Watch:
        watch = Watch(self._remove)
        with self._lock:
            self._state_subs.append((watch, table, callback))
        self._ensure_thread()
        return watch

    def _remove(self, watch: Watch) -> None:
        with self._lock:
            self._subs = [s for s in self._subs if s.watch is not watch]
            self._state_subs = [s for s in self._state_subs if s[0] is not watch]

    def publish(self, changes: Iterable[Change | StateChange]) -> None:
        with self._cond:
            self._queue.extend(changes)
            self._cond.notify()

    def has_state_watchers(self, table: str) -> bool:
        with self._lock:
            return any(t == table for _, t, _ in self._state_subs)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"watch-{self.name}", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._queue.append(None)
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        import logging

        log = logging.getLogger("kumo.store.watch")
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                batch, self._queue = self._queue, []
            for item in batch:
                if item is None:
                    return
                with self._lock:
                    if isinstance(item, Change):
                        targets: Sequence[Callable[[Any], None]] = [s.callback for s in self._subs if s.wants(item)]
                    else:
                        targets = [cb for _, t, cb in self._state_subs if t == item.table]
                for callback in targets:
                    try:
                        callback(item)
                    except Exception:
                        self.errors += 1
                        log.exception("watch callback failed on %s", item)


class Store(abc.ABC):
    """The topology store contract. Every method is thread-safe."""

    # --- objects ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def get_versioned(self, kind: str, obj_id: str) -> Versioned:
        """The object and its version; NotFound if absent."""

    def get(self, kind: str, obj_id: str) -> Obj:
        return self.get_versioned(kind, obj_id).value

    def find(self, kind: str, obj_id: str) -> Obj | None:
        try:
            return self.get(kind, obj_id)
        except NotFound:
            return None

    @abc.abstractmethod
    def list_versioned(self, kind: str) -> dict[str, Versioned]:
        """Every object of a kind, by id."""

    def list(self, kind: str, **equal: Any) -> list[Obj]:
        """Objects of a kind whose fields equal the given values (a list field: contains it), in id order.
        A filter on an indexed field reads only the objects indexed under that value."""
        candidates = self._candidates(kind, equal)
        items = self.list_versioned(kind) if candidates is None else self.get_many(kind, candidates)
        return [v.value for _, v in sorted(items.items()) if matches(v.value, equal)]

    def page(
        self, kind: str, limit: int, marker: str | None = None, **equal: Any
    ) -> tuple[builtins.list[Obj], str | None]:
        """Up to `limit` objects with ids after `marker`, in id order, and the marker of the next page (None
        on the last page). Reads only the objects it returns when the filters are indexed or absent."""
        candidates = self._candidates(kind, equal)
        ids = sorted(candidates) if candidates is not None else self.list_ids(kind)
        pos = bisect.bisect_right(ids, marker) if marker else 0
        out: list[Obj] = []
        while pos < len(ids) and len(out) < limit:
            chunk = ids[pos : pos + limit - len(out)]
            pos += len(chunk)
            found = self.get_many(kind, chunk)
            out += [found[i].value for i in chunk if i in found and matches(found[i].value, equal)]
        return out, (ids[pos - 1] if pos < len(ids) else None)

    def _candidates(self, kind: str, equal: dict[str, Any]) -> set[str] | None:
        for fname, want in equal.items():
            if isinstance(want, str) and indexed(kind, fname):
                ids = self.index_ids(kind, fname, want)
                if ids is not None:
                    return ids
        return None

    # --- indexes (kumo/topology/indexes.py says which fields) ------------------------------------------
    def index_ids(self, kind: str, fname: str, value: str) -> set[str] | None:
        """Ids of the objects of a kind indexed under field=value: a superset (check each object's field);
        None when the field is not indexed or this store's index is not built (then scan)."""
        return None

    def ensure_index(self) -> None:
        """Build the index if this store holds objects written before it existed (once; idempotent)."""
        return None  # a store without an index scans instead

    def get_many(self, kind: str, ids: Iterable[str]) -> dict[str, Versioned]:
        """The objects of these ids that exist."""
        out: dict[str, Versioned] = {}
        for obj_id in ids:
            try:
                out[obj_id] = self.get_versioned(kind, obj_id)
            except NotFound:
                continue
        return out

    def list_ids(self, kind: str) -> builtins.list[str]:
        """Every id of a kind, sorted."""
        return sorted(self.list_versioned(kind))

    @abc.abstractmethod
    def transaction(self, ops: Sequence[Op]) -> None:
        """Apply every operation or none. Raises NotFound, Conflict or VersionConflict."""

    def create(self, kind: str, obj_id: str, value: Obj) -> None:
        self.transaction([Create(kind, obj_id, value)])

    def update(self, kind: str, obj_id: str, value: Obj, version: int | None = None) -> None:
        self.transaction([Update(kind, obj_id, value, version)])

    def delete(self, kind: str, obj_id: str, version: int | None = None) -> None:
        self.transaction([Delete(kind, obj_id, version)])

    @abc.abstractmethod
    def watch(self, callback: ChangeCallback, kind: str | None = None, obj_id: str | None = None) -> Watch:
        """Deliver every later committed change (of a kind, or of one object) in commit order."""

    # --- state tables ------------------------------------------------------------------------------
    @abc.abstractmethod
    def open_session(self) -> Session:
        """A new liveness session for owned state entries."""

    @abc.abstractmethod
    def state_put(self, table: str, key: str, value: Obj, owner: Session | None = None) -> None:
        """Set an entry; with an owner it vanishes when that session ends."""

    @abc.abstractmethod
    def state_claim(self, table: str, key: str, value: Obj, owner: Session) -> bool:
        """Create an owned entry only if the key is free: True if this call created it (leases, e.g. the SNAT
        port blocks of one host); False if anyone holds it already."""

    @abc.abstractmethod
    def state_delete(self, table: str, key: str) -> None:
        """Remove an entry; absent entries are ignored."""

    @abc.abstractmethod
    def state_list(self, table: str) -> dict[str, Obj]: ...

    def state_get(self, table: str, key: str) -> Obj | None:
        return self.state_list(table).get(key)

    @abc.abstractmethod
    def state_watch(self, table: str, callback: StateCallback) -> Watch:
        """Deliver later changes of a state table (including entries vanishing with their session)."""

    def state_watch_keys(self, table: str, callback: StateCallback) -> Watch:
        """Like state_watch, for a caller that needs only which keys exist (a change's old/new may be `{}`):
        on ZooKeeper one watch on the table instead of one per entry, so that a table every host watches
        (the live hosts) costs watches in proportion to the hosts, not to their square."""
        return self.state_watch(table, callback)

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
