"""Distributed store on ZooKeeper (kazoo), shared by the API servers and agents of many hosts.

Layout under the chroot:
  objects/<kind>/<id>     JSON value; the znode version is the object's version
  log/c-<seq>             one sequential znode per committed transaction: its changes with old and new
  log-floor               entries below this sequence number were trimmed
  state/<table>/<key>     state entries; owned ones are ephemeral znodes of the owner's ZooKeeper session
  index/...               the index of kumo/topology/indexes.py (store/zkindex.py)

Why a change log (store/zklog.py): kazoo's data and child watches fire once and report only the latest data, so a
watcher would miss intermediate values and never see old ones. Writing the changes of a transaction in
the same ZooKeeper multi-op as the objects gives every watcher every change, in commit order.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote, unquote

from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState
from kazoo.recipe.cache import TreeCache, TreeEvent
from kazoo.recipe.watchers import ChildrenWatch

from kumo.topology.errors import StoreForbidden, StoreUnavailable, VersionConflict
from kumo.topology.store.base import (
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
from kumo.topology.store.zkcalls import Bounded, new_client
from kumo.topology.store.zkindex import IndexOps, ZkIndex
from kumo.topology.store.zklog import LogFollower, maybe_trim

log = logging.getLogger("kumo.store.zookeeper")

_RETRIES = 20  # internal optimistic retries when another writer touched the same objects


def _enc(value: Obj) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _dec(data: bytes) -> Any:
    return json.loads(data.decode())


class _ZkSession(Session):
    """An owner session is a ZooKeeper session of its own: its ephemeral znodes die with it."""

    def __init__(self, hosts: str, timeout: float, credentials: tuple[str, str] | None = None) -> None:
        self.client = new_client(hosts, timeout, credentials)
        try:
            self.client.start(timeout=timeout)
        except KazooTimeoutError:
            self.client.close()
            raise StoreUnavailable(f"cannot reach ZooKeeper at {hosts} to open a session") from None
        self.io = Bounded(self.client, hosts, timeout)
        self.id = f"{self.client.client_id[0]:x}"
        self.expiries = 0
        self.client.add_listener(self._on_state)

    def _on_state(self, state: str) -> None:
        if state == KazooState.LOST:
            self.expiries += 1  # kazoo reconnects with a new session; the old one's ephemeral znodes are gone

    def close(self) -> None:
        self.client.stop()
        self.client.close()


class ZookeeperStore(Store):
    def __init__(
        self,
        hosts: str,
        chroot: str = "/kumo",
        *,
        timeout: float = 10.0,
        call_timeout: float | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        """`timeout`: the session's (and connecting's); `call_timeout` (default: the same): how long one call
        may wait for an answer before it fails with StoreUnavailable (the API server's bound, a 503).
        `credentials` (user, password): digest authentication, and every znode Kumo makes readable and
        writable with them only."""
        self.hosts = hosts
        self.root = "/" + chroot.strip("/") if chroot.strip("/") else ""
        self.timeout = timeout
        self.credentials = credentials
        self.zk = new_client(hosts, timeout, credentials)
        try:
            self.zk.start(timeout=timeout)
            self.io = Bounded(self.zk, hosts, call_timeout or timeout)
            for path in ("objects", "log", "state"):
                self.io.ensure_path(self._p(path))
        except Exception as exc:
            self.zk.stop()
            self.zk.close()
            if isinstance(exc, (StoreUnavailable, StoreForbidden)):
                raise
            raise StoreUnavailable(f"cannot reach ZooKeeper at {hosts}: {exc}") from exc
        self._known_kinds: set[str] = set()
        self._hub = WatchHub(f"zookeeper:{hosts}{self.root}")
        self._reader: threading.Thread | None = None
        self._reader_lock = threading.Lock()
        self._follower: LogFollower | None = None
        self._closing = False
        self._caches: dict[Watch, TreeCache] = {}
        self.index = ZkIndex(self.zk, self.io, self.root)

    def _p(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _obj_path(self, kind: str, obj_id: str) -> str:
        return self._p("objects", kind, quote(obj_id, safe=""))

    def _ensure_kind(self, kind: str) -> None:
        if kind not in self._known_kinds:
            self.io.ensure_path(self._p("objects", kind))
            self._known_kinds.add(kind)

    # --- objects -------------------------------------------------------------------------------------
    def get_versioned(self, kind: str, obj_id: str) -> Versioned:
        try:
            data, stat = self.io.get(self._obj_path(kind, obj_id))
        except NoNodeError:
            raise not_found(kind, obj_id) from None
        return Versioned(_dec(data), stat.version)

    def list_versioned(self, kind: str) -> dict[str, Versioned]:
        return self.get_many(kind, self.list_ids(kind))  # (one deleted between listing and reading is left out)

    def get_many(self, kind: str, ids: Iterable[str]) -> dict[str, Versioned]:
        pending = [(i, self.zk.get_async(self._obj_path(kind, i))) for i in ids]
        out: dict[str, Versioned] = {}
        for obj_id, result in pending:
            try:
                data, stat = self.io.wait(result)
            except NoNodeError:
                continue
            out[obj_id] = Versioned(_dec(data), stat.version)
        return out

    def list_ids(self, kind: str) -> list[str]:
        try:
            return sorted(unquote(n) for n in self.io.get_children(self._p("objects", kind)))
        except NoNodeError:
            return []

    def index_ids(self, kind: str, fname: str, value: str) -> set[str] | None:
        return self.index.ids(kind, fname, value)

    def ensure_index(self) -> None:
        self.index.build(self.list_versioned)

    def transaction(self, ops: Sequence[Op]) -> None:
        for kind in {op.kind for op in ops if isinstance(op, Create)}:
            self._ensure_kind(kind)
        for _ in range(_RETRIES):
            if self._try_transaction(ops):
                return
        raise VersionConflict("too many concurrent changes to the same objects; retry the request")

    def _try_transaction(self, ops: Sequence[Op]) -> bool:
        """One optimistic attempt; False when an object changed under us (and the caller named no version)."""
        txn = self.zk.transaction()
        index = IndexOps()
        changes: list[dict[str, Any]] = []
        # What earlier operations of this transaction did, so later ones see it (ZooKeeper multi-ops
        # apply in order, but we read before committing).
        pending: dict[str, tuple[Obj, int] | None] = {}
        for op in ops:
            path = self._obj_path(op.kind, op.id)
            if isinstance(op, Create):
                # No read: ZooKeeper itself refuses an existing node (NodeExistsError below).
                if pending.get(path) is not None:
                    raise already_exists(op.kind, op.id)
                txn.create(path, _enc(op.value))
                pending[path] = (op.value, 0)
                changes.append({"op": "create", "kind": op.kind, "id": op.id, "old": None, "new": op.value})
                self.index.diff(index, op.kind, op.id, None, op.value)
                continue
            current = pending[path] if path in pending else self._read(path)
            if current is None:
                raise not_found(op.kind, op.id)
            old, version = current
            check_expected_version(op.kind, op.id, op.version, version)
            if isinstance(op, Update):
                txn.set_data(path, _enc(op.value), version)
                pending[path] = (op.value, version + 1)
                changes.append({"op": "update", "kind": op.kind, "id": op.id, "old": old, "new": op.value})
                self.index.diff(index, op.kind, op.id, old, op.value)
            elif isinstance(op, Delete):
                txn.delete(path, version)
                pending[path] = None
                changes.append({"op": "delete", "kind": op.kind, "id": op.id, "old": old, "new": None})
                self.index.diff(index, op.kind, op.id, old, None)
            else:
                assert isinstance(op, Check)
                txn.check(path, version)
        self.index.add_to(txn, index)
        if changes:
            txn.create(self._p("log", "c-"), _enc({"changes": changes}), sequence=True)
        try:
            results = self.io.commit(txn)
        except KazooException as exc:
            raise StoreUnavailable(f"ZooKeeper transaction failed: {exc}") from exc
        failure = next(
            ((i, r) for i, r in enumerate(results) if isinstance(r, Exception) and not isinstance(r, RolledBackError)),
            None,
        )
        if failure is None:
            self.index.committed(index)
            if changes:
                maybe_trim(self.zk, self.io, self.root, int(str(results[-1]).rsplit("c-", 1)[1]))
            return True
        position, error = failure
        if len(ops) <= position < len(ops) + len(index.paths):
            path = index.paths[position - len(ops)]
            self.index.failed(path, error, deleting=path in index.deletes)
            return False
        failed = ops[position] if position < len(ops) else None
        if isinstance(error, NodeExistsError) and isinstance(failed, Create):
            raise already_exists(failed.kind, failed.id)
        if isinstance(error, (BadVersionError, NoNodeError)) and failed is not None:
            if isinstance(error, NoNodeError) or isinstance(failed, Create):
                # Vanished between our read and the commit: re-reading decides whether that is NotFound.
                return False
            if failed.version is not None:
                raise VersionConflict(f"{failed.kind} {failed.id} changed concurrently; retry")
            return False
        raise StoreUnavailable(f"ZooKeeper refused the transaction: {error!r}")

    def _read(self, path: str) -> tuple[Obj, int] | None:
        try:
            data, stat = self.io.get(path)
        except NoNodeError:
            return None
        return _dec(data), stat.version

    def watch(self, callback: ChangeCallback, kind: str | None = None, obj_id: str | None = None) -> Watch:
        with self._reader_lock:
            if self._reader is None:
                follower = LogFollower(self.zk, self.io, self.root, self._hub.publish, lambda: self._closing)
                self._follower = follower
                self._reader = threading.Thread(
                    target=follower.run, args=(follower.tail(),), name="zk-log-reader", daemon=True
                )
                self._reader.start()
        return self._hub.subscribe(callback, kind, obj_id)

    # --- state tables ----------------------------------------------------------------------------------
    def state_path(self, table: str, key: str | None = None) -> str:
        parts = ["state", quote(table, safe="")]
        if key is not None:
            parts.append(quote(key, safe=""))
        return self._p(*parts)

    def open_session(self) -> Session:
        return _ZkSession(self.hosts, self.timeout, self.credentials)

    def state_put(self, table: str, key: str, value: Obj, owner: Session | None = None) -> None:
        io = owner.io if isinstance(owner, _ZkSession) else self.io
        path = self.state_path(table, key)
        self.io.ensure_path(self.state_path(table))
        data = _enc(value)
        owner_id = owner.client.client_id[0] if isinstance(owner, _ZkSession) else 0
        for _ in range(_RETRIES):
            try:
                _, stat = io.get(path)
            except NoNodeError:
                try:
                    io.create(path, data, ephemeral=owner is not None)
                    return
                except NodeExistsError:
                    continue
            if stat.ephemeralOwner == owner_id:
                try:
                    io.set(path, data, version=stat.version)
                    return
                except (BadVersionError, NoNodeError):
                    continue
            # Ownership changes: replace the znode atomically.
            txn = io.client.transaction()
            txn.delete(path, stat.version)
            txn.create(path, data, ephemeral=owner is not None)
            if not any(isinstance(r, Exception) for r in io.commit(txn)):
                return
        raise VersionConflict(f"state entry {table}/{key} keeps changing concurrently; retry")

    def state_claim(self, table: str, key: str, value: Obj, owner: Session) -> bool:
        assert isinstance(owner, _ZkSession)
        self.io.ensure_path(self.state_path(table))
        try:
            owner.io.create(self.state_path(table, key), _enc(value), ephemeral=True)
        except NodeExistsError:
            return False
        return True

    def state_delete(self, table: str, key: str) -> None:
        with contextlib.suppress(NoNodeError):
            self.io.delete(self.state_path(table, key))

    def state_list(self, table: str) -> dict[str, Obj]:
        try:
            names = self.io.get_children(self.state_path(table))
        except NoNodeError:
            return {}
        pending = [(n, self.zk.get_async(self.state_path(table) + "/" + n)) for n in names]
        out: dict[str, Obj] = {}
        for name, result in pending:
            try:
                out[unquote(name)] = _dec(self.io.wait(result)[0])
            except NoNodeError:
                continue
        return out

    def state_get(self, table: str, key: str) -> Obj | None:
        try:
            data, _ = self.io.get(self.state_path(table, key))
        except NoNodeError:
            return None
        return dict(_dec(data))

    def state_watch(self, table: str, callback: StateCallback) -> Watch:
        base = self.state_path(table)
        self.io.ensure_path(base)
        watch = self._hub.subscribe_state(table, callback)
        cache = TreeCache(self.zk, base)
        known: dict[str, Obj] = {}
        ready = threading.Event()

        def on_event(event: TreeEvent) -> None:
            if event.event_type == TreeEvent.INITIALIZED:
                ready.set()
                return
            node = event.event_data
            if node is None or node.path == base:
                return
            key = unquote(node.path.rsplit("/", 1)[1])
            old = known.get(key)
            if event.event_type in (TreeEvent.NODE_ADDED, TreeEvent.NODE_UPDATED):
                new = _dec(node.data)
                known[key] = new
            elif event.event_type == TreeEvent.NODE_REMOVED:
                new = None
                known.pop(key, None)
            else:
                return
            if ready.is_set() and old != new:
                self._hub.publish([StateChange(table, key, old, new)])

        cache.listen(on_event)
        cache.start()
        ready.wait(timeout=self.timeout)
        self._caches[watch] = cache
        return watch

    def state_watch_keys(self, table: str, callback: StateCallback) -> Watch:
        base = self.state_path(table)
        self.io.ensure_path(base)
        watch = self._hub.subscribe_state(table, callback)
        known: set[str] | None = None
        ready = threading.Event()

        def on_children(children: list[str]) -> bool | None:
            nonlocal known
            if watch.cancelled or self._closing:
                return False  # ends kazoo's ChildrenWatch
            keys = {unquote(c) for c in children}
            if known is not None:
                self._hub.publish(
                    [StateChange(table, k, None, {}) for k in sorted(keys - known)]
                    + [StateChange(table, k, {}, None) for k in sorted(known - keys)]
                )
            known = keys
            ready.set()
            return None

        ChildrenWatch(self.zk, base, on_children)
        ready.wait(timeout=self.timeout)
        return watch

    def close(self) -> None:
        self._closing = True
        if self._follower is not None:
            self._follower.kick.set()
        for cache in self._caches.values():
            cache.close()
        if self._reader is not None:
            self._reader.join(timeout=3)
        self._hub.stop()
        self.zk.stop()
        self.zk.close()

    def __repr__(self) -> str:
        return f"ZookeeperStore({self.hosts!r}, {self.root!r})"


def new_chroot() -> str:
    """A unique chroot, for tests that share one ZooKeeper."""
    return f"/kumo-test-{uuid.uuid4().hex[:12]}"
