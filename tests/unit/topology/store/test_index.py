"""The stores' index of references and filter fields, and pagination: on SQLite and on a real ZooKeeper."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from kumo.testing.zookeeper import ZooKeeperServer
from kumo.topology.errors import NotFound
from kumo.topology.indexes import index_entries
from kumo.topology.store.base import Create, Delete, Store, Update
from kumo.topology.store.sqlite import SqliteStore
from kumo.topology.store.zookeeper import ZookeeperStore, new_chroot


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def expected_index(store: Store, kind: str, fname: str, value: str) -> set[str]:
    return {i for i, v in store.list_versioned(kind).items() if (fname, value) in index_entries(kind, v.value)}


def test_index_follows_creates_updates_and_deletes(store: Store) -> None:
    store.ensure_index()
    store.create("ports", "p1", {"id": "p1", "device_id": "b1", "port_group_ids": ["g1", "g2"], "name": "a"})
    store.create("ports", "p2", {"id": "p2", "device_id": "b1", "port_group_ids": [], "name": "b"})
    assert store.index_ids("ports", "device_id", "b1") == {"p1", "p2"}
    assert store.index_ids("ports", "port_group_ids", "g2") == {"p1"}
    assert store.index_ids("ports", "name", "a") == {"p1"}
    store.update("ports", "p1", {"id": "p1", "device_id": "b1", "port_group_ids": ["g2", "g3"], "name": "c"})
    assert store.index_ids("ports", "port_group_ids", "g1") == set()
    assert store.index_ids("ports", "port_group_ids", "g3") == {"p1"}
    assert store.index_ids("ports", "name", "a") == set()
    store.delete("ports", "p2")
    assert store.index_ids("ports", "device_id", "b1") == {"p1"}
    assert store.index_ids("ports", "mtu", "1500") is None  # not an indexed field
    # A failed transaction leaves the index as it was.
    with pytest.raises(NotFound):
        store.transaction([Delete("ports", "p1"), Create("ports", "p1", {"x": 1}), Delete("ports", "nope")])
    assert store.index_ids("ports", "device_id", "b1") == {"p1"}


def test_index_matches_the_objects_after_random_writes(store: Store) -> None:
    """Whatever the sequence of writes, every entry of the index is exactly what the objects hold."""
    store.ensure_index()
    rng = random.Random(7)
    devices, groups = ["d1", "d2", "d3"], ["g1", "g2", "g3"]
    live: set[str] = set()
    for step in range(120):
        obj_id = f"p{rng.randrange(12)}"
        value: dict[str, Any] = {
            "id": obj_id,
            "device_id": rng.choice(devices),
            "port_group_ids": rng.sample(groups, rng.randrange(3)),
            "host_id": rng.choice([None, "h1", "h2"]),
        }
        if obj_id not in live:
            store.transaction([Create("ports", obj_id, value)])
            live.add(obj_id)
        elif step % 3 == 0:
            store.transaction([Delete("ports", obj_id)])
            live.discard(obj_id)
        else:
            store.transaction([Update("ports", obj_id, value)])
    for fname, values in (("device_id", devices), ("port_group_ids", groups), ("host_id", ["h1", "h2"])):
        for value in values:
            assert store.index_ids("ports", fname, value) == expected_index(store, "ports", fname, value)
            assert store.list("ports", **{fname: value}) == [
                v.value for _, v in sorted(store.list_versioned("ports").items()) if value in str(v.value.get(fname))
            ]


def test_pages_walk_every_object_once_in_id_order(store: Store) -> None:
    store.ensure_index()
    ids = [f"p{n:03d}" for n in range(23)]
    for n, obj_id in enumerate(ids):
        store.create("ports", obj_id, {"id": obj_id, "device_id": "b1" if n % 2 else "b2"})
    seen: list[str] = []
    marker = None
    while True:
        page, marker = store.page("ports", 5, marker)
        seen += [p["id"] for p in page]
        assert len(page) <= 5
        if marker is None:
            break
    assert seen == ids
    odd, marker = store.page("ports", 100, None, device_id="b1")
    assert [p["id"] for p in odd] == ids[1::2] and marker is None
    second, _ = store.page("ports", 3, "p005", device_id="b1")
    assert [p["id"] for p in second] == ["p007", "p009", "p011"]
    assert store.page("ports", 5, "p999") == ([], None)


def test_sqlite_rebuilds_an_index_it_did_not_write(tmp_path: Path) -> None:
    path = tmp_path / "kumo.db"
    first = SqliteStore(path)
    first.create("ports", "p1", {"id": "p1", "device_id": "b1"})
    first._db.execute("DELETE FROM idx")  # as a file written before the index existed
    first._db.execute("DELETE FROM meta WHERE name='index'")
    first.close()
    second = SqliteStore(path)
    try:
        assert second.index_ids("ports", "device_id", "b1") == {"p1"}
    finally:
        second.close()


def test_zookeeper_index_is_used_once_built_and_survives_stale_entries(zookeeper: ZooKeeperServer) -> None:
    chroot = new_chroot()
    store = ZookeeperStore(zookeeper.hosts, chroot)
    raw = KazooClient(hosts=zookeeper.hosts)
    raw.start()
    try:
        store.create("ports", "p1", {"id": "p1", "device_id": "b1"})
        raw.delete(f"{chroot}/index", recursive=True)  # as a cluster written before the index existed
        fresh = ZookeeperStore(zookeeper.hosts, chroot)
        try:
            assert fresh.index_ids("ports", "device_id", "b1") is None  # not built: callers scan
            assert fresh.list("ports", device_id="b1") == [{"id": "p1", "device_id": "b1"}]
            fresh.ensure_index()
            assert fresh.index_ids("ports", "device_id", "b1") == {"p1"}
            # Writes by a store that knew nothing of the missing entries still commit.
            store.update("ports", "p1", {"id": "p1", "device_id": "b2"})
            assert fresh.index_ids("ports", "device_id", "b2") == {"p1"}
            # A stale entry (left by a build that raced a delete) neither misleads readers nor blocks writes.
            raw.create(f"{chroot}/index/ports/device_id/b3/p9", makepath=True)
            assert fresh.list("ports", device_id="b3") == []
            store.create("ports", "p9", {"id": "p9", "device_id": "b3"})
            assert fresh.index_ids("ports", "device_id", "b3") == {"p9"}
            # A value that lost its last entry is removed, so the index does not grow with history.
            store.delete("ports", "p9")
            assert fresh.index_ids("ports", "device_id", "b3") == set()
            assert wait_for(lambda: raw.exists(f"{chroot}/index/ports/device_id/b3") is None)
        finally:
            fresh.close()
    finally:
        raw.stop()
        raw.close()
        store.close()
