"""The ZooKeeper change log: followers see every change in order, across trims, and resync when the log was
trimmed past them."""

from __future__ import annotations

import threading
import time

import pytest

from kumo.testing.zookeeper import ZooKeeperServer
from kumo.topology.store import zklog
from kumo.topology.store.base import Change
from kumo.topology.store.zookeeper import ZookeeperStore, new_chroot

pytestmark = pytest.mark.zookeeper


def test_followers_see_every_change_across_trims(zookeeper: ZooKeeperServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zklog, "LOG_KEEP", 16)
    monkeypatch.setattr(zklog, "TRIM_EVERY", 4)
    chroot = new_chroot()
    writer = ZookeeperStore(zookeeper.hosts, chroot)
    follower = ZookeeperStore(zookeeper.hosts, chroot)
    seen: list[int] = []
    done = threading.Event()

    def on_change(change: Change) -> None:
        seen.append(-1 if change.op == "resync" else int(change.id))
        if change.id == "99":
            done.set()

    try:
        follower.watch(on_change, "bridges")
        for n in range(100):
            writer.create("bridges", str(n), {})
            if n % 10 == 0:
                time.sleep(0.05)  # let the follower wait at the end of the log, across trims
        assert done.wait(15), f"follower stopped after {seen[-3:]}"
        assert seen == list(range(100))
        assert len(writer.zk.get_children(f"{chroot}/log")) <= 16 + 4
    finally:
        follower.close()
        writer.close()


def test_a_follower_trimmed_past_is_told_to_resync(zookeeper: ZooKeeperServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zklog, "LOG_KEEP", 8)
    monkeypatch.setattr(zklog, "TRIM_EVERY", 4)
    chroot = new_chroot()
    writer = ZookeeperStore(zookeeper.hosts, chroot)
    changes: list[Change] = []
    published = threading.Event()

    def publish(batch: object) -> None:
        changes.extend(batch)  # type: ignore[call-overload]
        published.set()

    follower = zklog.LogFollower(writer.zk, writer.io, writer.root, publish, lambda: False)
    try:
        start = follower.tail()
        for n in range(40):
            writer.create("bridges", str(n), {})
        seq = follower._after_gap(start)  # far behind: its entry was trimmed
        assert [c.op for c in changes] == ["resync"]
        assert seq > start
    finally:
        writer.close()


def test_a_follower_catching_up_leaves_no_watch_behind(
    zookeeper: ZooKeeperServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Watches only where no entry is: one on the next entry, however far behind the follower started (a
    watch on an existing entry stays until the entry is trimmed: thousands per host). (A follower that was up
    to date when a burst came leaves one, on the first entry of the burst.)"""
    monkeypatch.setattr(zklog, "SAFETY_POLL", 0.1)  # (the last step waits for the next entry)
    chroot = new_chroot()
    writer = ZookeeperStore(zookeeper.hosts, chroot)
    published: list[Change] = []
    follower = zklog.LogFollower(writer.zk, writer.io, writer.root, published.extend, lambda: False)
    try:
        for n in range(300):
            writer.create("bridges", str(n), {})
        seq = 0
        for _ in range(40):  # read-ahead batches of 1, 2, 4, ... 64
            seq = follower._step(seq) if seq < 300 else seq
        assert [int(c.id) for c in published] == list(range(300))
        watched = [line for line in zookeeper.ask("wchp").splitlines() if line.startswith(f"{chroot}/log/")]
        assert watched == [f"{chroot}/log/{zklog.entry_name(300)}"], watched
    finally:
        writer.close()
