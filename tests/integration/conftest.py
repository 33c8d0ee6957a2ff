"""Integration tests: root, network namespaces and the real eBPF datapath, with `kumo up` in a host
namespace (see kumo.testing.netns). They are part of `make test`; without root they fail, loudly."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kumo.testing.cloud import Cloud, build_cloud
from kumo.testing.netns import VirtualHost, inside


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces, eBPF): run `make test` as root")


@pytest.fixture
def host(tmp_path: Path) -> Iterator[VirtualHost]:
    with VirtualHost(tmp_path) as h, inside(h.netns):
        yield h


@pytest.fixture
def cloud(host: VirtualHost) -> Cloud:
    return build_cloud(host)


@pytest.fixture
def exact_cloud(tmp_path: Path) -> Iterator[Cloud]:
    """The cloud on an agent that installs exact flows only (`--max-masks-per-port 0`): every new 5-tuple
    goes to the agent, as every new connection through a stateful firewall does. For tests of what happens
    to flows one by one (storms, eviction)."""
    with VirtualHost(tmp_path, kumo_args=("--max-masks-per-port", "0")) as h, inside(h.netns):
        yield build_cloud(h)
