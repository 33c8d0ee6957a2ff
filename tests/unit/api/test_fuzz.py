"""Schema-driven fuzzing (schemathesis) of every operation in /openapi.json: bad input is never a 5xx.

Bounded: a fixed number of generated cases per operation, no deadline per case, one in-process app on a
populated embedded store (so that operations also meet real objects, links and references). The app requires
tokens, as beyond loopback, and every case is sent with an admin token (so that it reaches the operation).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from kumo.api import create_app
from kumo.client import Client
from kumo.demo import build_sample_cloud
from kumo.testing.apiserver import ApiServer
from kumo.topology.store.sqlite import SqliteStore
from kumo.topology.tokens import create_token

EXAMPLES_PER_OPERATION = 12

_tmp = tempfile.TemporaryDirectory(prefix="kumo-fuzz-")
_store = SqliteStore(Path(_tmp.name) / "kumo.db")
with ApiServer(_store) as _api, Client(_api.url) as _client:
    build_sample_cloud(_client)
_, _token = create_token(_store, "admin", name="fuzz")
AUTH = {"Authorization": f"Bearer {_token}"}
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(_store, auth=True), headers=AUTH)


@pytest.fixture(scope="module", autouse=True)
def _close_store() -> Iterator[None]:
    yield
    _store.close()
    _tmp.cleanup()


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=AUTH, checks=[not_a_server_error])
