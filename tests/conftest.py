"""Shared fixtures. Servers started here run on loopback, with unique names, and are always stopped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kumo.testing.zookeeper import ZooKeeperServer


@pytest.fixture(scope="session")
def zookeeper() -> Iterator[ZooKeeperServer]:
    """One real ZooKeeper 3.8 for the whole run; each test takes a chroot of its own."""
    with ZooKeeperServer() as server:
        yield server
