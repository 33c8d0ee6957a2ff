"""The ZooKeeper store's index (kumo/topology/indexes.py): one empty znode per entry, written in the same
multi-op as the objects.

Layout under the chroot:
  index/<kind>/<field>/<value>/<id>   an object of <kind> whose <field> holds <value>
  index-version                       the indexed fields' version the index was built for

A value's parent znode must exist before a multi-op can create an entry under it: it is made beforehand
(and remembered), and removed, best effort, when a transaction took an entry out of it (ZooKeeper refuses
to delete a parent that still has entries, so a concurrent writer loses nothing: its own multi-op fails on
the missing parent and is retried).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from kazoo.client import KazooClient, TransactionRequest
from kazoo.exceptions import NodeExistsError, NoNodeError

from kumo.topology.indexes import INDEX_VERSION, INDEXED, index_entries, indexed


@dataclass
class IndexOps:
    """The index side of one transaction attempt: entry paths to create and to delete."""

    creates: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        """Entry paths in the order their operations are added to the multi-op."""
        return [*self.creates, *self.deletes]


class ZkIndex:
    def __init__(self, zk: KazooClient, io: Any, root: str) -> None:
        self.zk = zk
        self.io = io  # the store's bounded calls
        self.root = root
        self._parents: set[str] = set()  # value znodes known to exist
        self._ready = False
        # Entries a transaction expected and did not find (an index built while objects changed): not
        # deleted again, so that the retried transaction can commit.
        self.absent: set[str] = set()

    def _p(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def value_path(self, kind: str, fname: str, value: str) -> str:
        return self._p("index", kind, fname, quote(value, safe=""))

    def entry_path(self, kind: str, fname: str, value: str, obj_id: str) -> str:
        return f"{self.value_path(kind, fname, value)}/{quote(obj_id, safe='')}"

    def diff(self, ops: IndexOps, kind: str, obj_id: str, old: Any, new: Any) -> None:
        before, after = index_entries(kind, old), index_entries(kind, new)
        creates = [self.entry_path(kind, f, v, obj_id) for f, v in sorted(after - before)]
        self.absent.difference_update(creates)  # (present again once this commits)
        ops.creates += creates
        ops.deletes += [
            p for f, v in sorted(before - after) if (p := self.entry_path(kind, f, v, obj_id)) not in self.absent
        ]

    def add_to(self, txn: TransactionRequest, ops: IndexOps) -> None:
        for path in ops.creates:
            self._ensure_parent(path.rsplit("/", 1)[0])
            txn.create(path, b"")
        for path in ops.deletes:
            txn.delete(path)

    def _ensure_parent(self, parent: str) -> None:
        if parent not in self._parents:
            self.io.ensure_path(parent)
            self._parents.add(parent)

    def failed(self, path: str, error: Exception, *, deleting: bool) -> None:
        """An index operation failed the multi-op: repair what made it fail, so that a retry commits."""
        if deleting:
            self.absent.add(path)  # never there (written before the index was built): do not delete it again
        elif isinstance(error, NodeExistsError):
            self.zk.delete_async(path)  # left by an index build that raced a delete: stale
        else:
            self._parents.discard(path.rsplit("/", 1)[0])  # the value znode was cleaned up: make it again

    def committed(self, ops: IndexOps) -> None:
        """Remove value znodes that may have lost their last entry (refused while any entry remains)."""
        self.absent.difference_update(ops.deletes)
        for parent in {p.rsplit("/", 1)[0] for p in ops.deletes}:
            self._parents.discard(parent)
            self.zk.delete_async(parent)

    # --- reads -------------------------------------------------------------------------------------------
    def ids(self, kind: str, fname: str, value: str) -> set[str] | None:
        if not indexed(kind, fname) or not self.ready():
            return None
        try:
            names = self.io.get_children(self.value_path(kind, fname, value))
        except NoNodeError:
            return set()
        return {unquote(n) for n in names}

    def ready(self) -> bool:
        if not self._ready:
            try:
                data, _ = self.io.get(self._p("index-version"))
            except NoNodeError:
                return False
            self._ready = data.decode() == INDEX_VERSION
        return self._ready

    def build(self, list_versioned: Any) -> None:
        """Index every object written before the index existed (or when the indexed fields changed). Writers
        maintain entries whether or not the index is built, so entries made here only add what is missing."""
        if self.ready():
            return
        pending = []
        for kind in INDEXED:
            for obj_id, versioned in list_versioned(kind).items():
                for fname, value in index_entries(kind, versioned.value):
                    path = self.entry_path(kind, fname, value, obj_id)
                    self._ensure_parent(path.rsplit("/", 1)[0])
                    pending.append(self.zk.create_async(path, b""))
        for result in pending:
            try:
                self.io.wait(result)
            except NodeExistsError:
                continue
        self.io.put(self._p("index-version"), INDEX_VERSION.encode())
        self._ready = True
