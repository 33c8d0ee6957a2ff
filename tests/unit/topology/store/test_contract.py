"""The Store contract: the same tests against the embedded SQLite store and a real ZooKeeper."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from kumo.testing.zookeeper import ZooKeeperServer
from kumo.topology.errors import Conflict, NotFound, StoreUnavailable, VersionConflict
from kumo.topology.store.base import Change, Check, Create, Delete, StateChange, Store, Update
from kumo.topology.store.sqlite import SqliteStore
from kumo.topology.store.zookeeper import ZookeeperStore, new_chroot


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_crud_and_versions(store: Store) -> None:
    store.create("bridges", "b1", {"name": "one"})
    got = store.get_versioned("bridges", "b1")
    assert got.value == {"name": "one"}
    store.update("bridges", "b1", {"name": "uno"})
    assert store.get_versioned("bridges", "b1").version == got.version + 1
    assert store.get("bridges", "b1") == {"name": "uno"}
    with pytest.raises(Conflict):
        store.create("bridges", "b1", {"name": "again"})
    store.delete("bridges", "b1")
    with pytest.raises(NotFound):
        store.get("bridges", "b1")
    with pytest.raises(NotFound):
        store.update("bridges", "b1", {})
    with pytest.raises(NotFound):
        store.delete("bridges", "b1")
    assert store.find("bridges", "b1") is None


def test_list_by_kind_with_filters(store: Store) -> None:
    store.create("ports", "p1", {"device_id": "d1", "n": 1})
    store.create("ports", "p2", {"device_id": "d2", "n": 2})
    store.create("ports", "p3", {"device_id": "d1", "n": 3})
    store.create("routers", "r1", {"device_id": "d1"})
    assert [p["n"] for p in store.list("ports")] == [1, 2, 3]
    assert [p["n"] for p in store.list("ports", device_id="d1")] == [1, 3]
    assert store.list("chains") == []


def test_ids_with_awkward_characters(store: Store) -> None:
    store.create("claims", "10.0.0.1/32:80", {"x": 1})
    assert store.get("claims", "10.0.0.1/32:80") == {"x": 1}
    assert set(store.list_versioned("claims")) == {"10.0.0.1/32:80"}


def test_transaction_is_all_or_nothing(store: Store) -> None:
    store.create("bridges", "exists", {"v": 0})
    with pytest.raises(Conflict):
        store.transaction([Create("bridges", "new", {"v": 1}), Create("bridges", "exists", {"v": 2})])
    assert store.find("bridges", "new") is None
    assert store.get("bridges", "exists") == {"v": 0}

    with pytest.raises(NotFound):
        store.transaction([Update("bridges", "exists", {"v": 3}), Check("chains", "missing")])
    assert store.get("bridges", "exists") == {"v": 0}

    version = store.get_versioned("bridges", "exists").version
    with pytest.raises(VersionConflict):
        store.transaction([Create("bridges", "n2", {}), Update("bridges", "exists", {"v": 4}, version + 7)])
    assert store.find("bridges", "n2") is None

    store.transaction(
        [
            Create("bridges", "n3", {"v": 5}),
            Update("bridges", "exists", {"v": 6}, version),
            Check("bridges", "n3"),
        ]
    )
    assert store.get("bridges", "exists") == {"v": 6}
    store.transaction([Delete("bridges", "n3"), Delete("bridges", "exists")])
    assert store.list("bridges") == []


def test_watch_delivers_every_change_in_order_with_old_and_new(store: Store) -> None:
    seen: list[Change] = []
    store.watch(seen.append, kind="bridges")
    writers, per_writer = 4, 25

    def writer(w: int) -> None:
        oid = f"w{w}"
        store.create("bridges", oid, {"n": 0})
        for n in range(1, per_writer):
            store.update("bridges", oid, {"n": n})
        store.delete("bridges", oid)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.create("chains", "other-kind", {})
    expected = writers * (per_writer + 1)
    assert wait_for(lambda: len(seen) >= expected), f"{len(seen)} of {expected} changes delivered"
    time.sleep(0.1)
    assert len(seen) == expected
    assert all(c.kind == "bridges" for c in seen)
    assert [c.seq for c in seen] == sorted(c.seq for c in seen)
    for w in range(writers):
        mine = [c for c in seen if c.id == f"w{w}"]
        assert [c.op for c in mine] == ["create"] + ["update"] * (per_writer - 1) + ["delete"]
        for before, after in itertools.pairwise(mine):
            assert after.old == before.new  # every intermediate value is seen, none skipped
        assert mine[-1].new is None and mine[-1].old == {"n": per_writer - 1}


def test_watch_one_object_and_cancel(store: Store) -> None:
    one: list[Change] = []
    everything: list[Change] = []
    watch = store.watch(one.append, kind="ports", obj_id="p1")
    store.watch(everything.append)
    store.create("ports", "p1", {"a": 1})
    store.create("ports", "p2", {"a": 2})
    assert wait_for(lambda: len(everything) == 2)
    assert [(c.op, c.id, c.new) for c in one] == [("create", "p1", {"a": 1})]
    watch.cancel()
    store.update("ports", "p1", {"a": 3})
    assert wait_for(lambda: len(everything) == 3)
    assert len(one) == 1


def test_transaction_changes_arrive_together_in_op_order(store: Store) -> None:
    seen: list[Change] = []
    store.watch(seen.append)
    store.transaction([Create("a", "1", {}), Create("b", "2", {}), Create("a", "3", {})])
    assert wait_for(lambda: len(seen) == 3)
    assert [(c.kind, c.id) for c in seen] == [("a", "1"), ("b", "2"), ("a", "3")]
    assert len({c.seq for c in seen}) == 1


def test_state_tables_and_owned_entries(store: Store) -> None:
    changes: list[StateChange] = []
    store.state_watch("mac_table", changes.append)
    session = store.open_session()
    store.state_put("mac_table", "br1/aa:bb:cc:00:00:01", {"port_id": "p1"}, owner=session)
    store.state_put("mac_table", "br1/aa:bb:cc:00:00:02", {"port_id": "p2"})
    store.state_put("mac_table", "br1/aa:bb:cc:00:00:01", {"port_id": "p9"}, owner=session)
    assert store.state_get("mac_table", "br1/aa:bb:cc:00:00:01") == {"port_id": "p9"}
    assert set(store.state_list("mac_table")) == {"br1/aa:bb:cc:00:00:01", "br1/aa:bb:cc:00:00:02"}
    session.close()
    assert wait_for(lambda: store.state_list("mac_table").keys() == {"br1/aa:bb:cc:00:00:02"})
    assert wait_for(lambda: any(c.new is None for c in changes))
    key1 = "br1/aa:bb:cc:00:00:01"
    assert [(c.key, c.old, c.new) for c in changes if c.key == key1] == [
        (key1, None, {"port_id": "p1"}),
        (key1, {"port_id": "p1"}, {"port_id": "p9"}),
        (key1, {"port_id": "p9"}, None),
    ]
    store.state_delete("mac_table", "br1/aa:bb:cc:00:00:02")
    store.state_delete("mac_table", "never-there")
    assert store.state_list("mac_table") == {}
    assert store.state_list("no_such_table") == {}


def test_a_claim_creates_only_a_free_entry_and_ends_with_its_owner(store: Store) -> None:
    first, second = store.open_session(), store.open_session()
    assert store.state_claim("snat_blocks", "r1/192.0.2.1/1024", {"host_id": "h1"}, owner=first)
    assert not store.state_claim("snat_blocks", "r1/192.0.2.1/1024", {"host_id": "h2"}, owner=second)
    assert store.state_get("snat_blocks", "r1/192.0.2.1/1024") == {"host_id": "h1"}
    first.close()
    assert wait_for(lambda: store.state_get("snat_blocks", "r1/192.0.2.1/1024") is None)
    assert store.state_claim("snat_blocks", "r1/192.0.2.1/1024", {"host_id": "h2"}, owner=second)
    second.close()


def test_sqlite_survives_restart_and_drops_orphaned_owned_entries(tmp_path: Path) -> None:
    path = tmp_path / "kumo.db"
    first = SqliteStore(path)
    first.create("bridges", "b1", {"name": "kept"})
    first.state_put("arp_table", "r1/10.0.0.1", {"mac": "aa:bb:cc:dd:ee:ff"})
    first.state_put("hosts_alive", "h1", {}, owner=first.open_session())
    first.close()
    second = SqliteStore(path)
    try:
        assert second.get("bridges", "b1") == {"name": "kept"}
        assert second.state_list("arp_table") == {"r1/10.0.0.1": {"mac": "aa:bb:cc:dd:ee:ff"}}
        assert second.state_list("hosts_alive") == {}
    finally:
        second.close()


@pytest.mark.zookeeper
def test_zookeeper_owned_entries_vanish_on_session_expiry(zookeeper: ZooKeeperServer) -> None:
    store = ZookeeperStore(zookeeper.hosts, new_chroot())
    try:
        session = store.open_session()
        store.state_put("hosts_alive", "h1", {"since": 1}, owner=session)
        assert store.state_list("hosts_alive") == {"h1": {"since": 1}}
        # Expire the session from elsewhere, as the server does when an agent dies: another connection
        # with the same session credentials closes it (the technique of kazoo's own test harness).
        sid, password = session.client.client_id  # type: ignore[attr-defined]
        intruder = KazooClient(hosts=zookeeper.hosts, client_id=(sid, password))
        intruder.start(timeout=10)
        intruder.stop()
        intruder.close()
        assert wait_for(lambda: store.state_list("hosts_alive") == {}, timeout=10)
        # The owner learns of it (and writes its entries again, owned by the session kazoo opened anew)
        assert wait_for(lambda: session.expiries == 1, timeout=10)
        assert wait_for(lambda: session.client.connected, timeout=10)  # type: ignore[attr-defined]
        store.state_put("hosts_alive", "h1", {"since": 2}, owner=session)
        assert store.state_list("hosts_alive") == {"h1": {"since": 2}}
        session.close()
        assert wait_for(lambda: store.state_list("hosts_alive") == {}, timeout=10)
    finally:
        store.close()


@pytest.mark.zookeeper
def test_zookeeper_outage_fails_fast_and_recovers(tmp_path: Path) -> None:
    """While ZooKeeper is away, calls fail at once with StoreUnavailable (no hang); writes and
    watches work again within seconds of its return."""
    with ZooKeeperServer() as server:
        store = ZookeeperStore(server.hosts, new_chroot(), timeout=4.0)
        try:
            seen: list[Change] = []
            store.watch(seen.append, kind="bridges")
            store.create("bridges", "before", {})
            server.stop()
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                for _ in range(50):  # the first calls may still see the connection as up
                    store.list("bridges")
                    time.sleep(0.05)
            with pytest.raises(StoreUnavailable, match="unreachable"):
                store.create("bridges", "during", {})
            assert time.monotonic() - started < 8
            server.start()
            assert wait_for(lambda: _creates(store, "after"), timeout=15)
            wait_for(lambda: [c.id for c in seen] == ["before", "after"], timeout=10)
            assert [c.id for c in seen] == ["before", "after"]
            assert store.find("bridges", "during") is None
        finally:
            store.close()


def _creates(store: Store, obj_id: str) -> bool:
    """Create, retrying as a client must: an unanswered write may still have been applied."""
    try:
        store.create("bridges", obj_id, {})
    except StoreUnavailable:
        return False
    except Conflict as exc:
        assert exc.code == "already_exists"
    return True


def test_a_keys_watch_sees_entries_come_and_go(store: Store) -> None:
    changes: list[StateChange] = []
    store.state_put("hosts_alive_test", "h0", {"since": 0})
    store.state_watch_keys("hosts_alive_test", changes.append)
    session = store.open_session()
    store.state_put("hosts_alive_test", "h1", {"since": 1}, owner=session)
    h1 = lambda: [c.new is None for c in changes if c.key == "h1"]  # noqa: E731
    assert wait_for(lambda: h1() == [False])
    session.close()  # vanishes with its owner
    assert wait_for(lambda: h1() == [False, True])
    assert store.state_list("hosts_alive_test").keys() == {"h0"}
