from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kumo.api import create_app
from kumo.topology.store.sqlite import SqliteStore


@pytest.fixture
def api(tmp_path) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    store = SqliteStore(tmp_path / "kumo.db")
    try:
        with TestClient(create_app(store)) as client:
            yield client
    finally:
        store.close()
