from __future__ import annotations

from collections.abc import Iterator

import pytest

from kumo.testing.redis import RedisServer


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A throw-away Redis 7 on loopback, one per test module, always stopped."""
    with RedisServer() as server:
        yield server
