from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kumo.topology.store.sqlite import SqliteStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """An embedded store of the test's own (tests/unit/topology overrides it with every backend)."""
    opened = SqliteStore(tmp_path / "kumo.db")
    try:
        yield opened
    finally:
        opened.close()
