"""A ZooKeeper that hangs without a word (SIGSTOP) must not hang the API: requests are answered 503 within
`kumo api --store-timeout`, and served again once it is back (issue 21)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kumo.testing.processes import ApiProcess
from kumo.testing.zookeeper import ZooKeeperServer
from kumo.topology.store.zookeeper import new_chroot

BOUND = 1.5


@pytest.fixture
def own_zookeeper() -> Iterator[ZooKeeperServer]:
    """A ZooKeeper of this test's own (freezing the shared one would stall every other test)."""
    with ZooKeeperServer() as server:
        yield server


def timed(method: str, url: str, **kwargs: object) -> tuple[int, float]:
    started = time.monotonic()
    response = httpx.request(method, url, timeout=30, **kwargs)  # type: ignore[arg-type]
    return response.status_code, time.monotonic() - started


def test_a_frozen_zookeeper_gets_503_within_the_bound_for_reads_and_writes(
    own_zookeeper: ZooKeeperServer, tmp_path: Path
) -> None:
    store = f"zookeeper://{own_zookeeper.hosts}{new_chroot()}"
    command = ["api", "--store", store, "--store-timeout", str(BOUND)]
    with ApiProcess(None, tmp_path / "api.log", command=command) as api:
        assert timed("POST", f"{api.url}/v1/bridges", json={"name": "before"})[0] == 201
        own_zookeeper.freeze()
        try:
            for method, body in (("GET", None), ("POST", {"name": "during"})):
                status, took = timed(method, f"{api.url}/v1/bridges", json=body)
                assert status == 503 and took < BOUND + 1.0, (method, status, took)
        finally:
            own_zookeeper.thaw()
        deadline = time.monotonic() + 15
        while timed("GET", f"{api.url}/v1/bridges")[0] != 200:
            assert time.monotonic() < deadline, "the API did not come back with ZooKeeper"
            time.sleep(0.2)
        names = {b["name"] for b in httpx.get(f"{api.url}/v1/bridges", timeout=10).json()}
        assert "before" in names
