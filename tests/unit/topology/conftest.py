"""The `store` fixture: every test that takes it runs on the embedded store and on a real ZooKeeper."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kumo.testing.zookeeper import ZooKeeperServer
from kumo.topology.store.base import Store
from kumo.topology.store.sqlite import SqliteStore
from kumo.topology.store.zookeeper import ZookeeperStore, new_chroot


@pytest.fixture(params=["sqlite", pytest.param("zookeeper", marks=pytest.mark.zookeeper)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s: Store = SqliteStore(tmp_path / "kumo.db")
    else:
        zk: ZooKeeperServer = request.getfixturevalue("zookeeper")
        s = ZookeeperStore(zk.hosts, new_chroot())
    try:
        yield s
    finally:
        s.close()
