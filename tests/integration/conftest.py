"""Integration tests: root, network namespaces and the real eBPF datapath, with `kumo up` in a host
namespace (see kumo.testing.netns). They are part of `make test`; without root they fail, loudly."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kumo.client import Client
from kumo.testing.netns import VirtualHost, Vm, inside


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces, eBPF): run `make test` as root")


@pytest.fixture
def host(tmp_path: Path) -> Iterator[VirtualHost]:
    with VirtualHost(tmp_path) as h, inside(h.netns):
        yield h


@dataclass
class Cloud:
    """Two tenant bridges (web 10.0.1.0/24, db 10.0.2.0/24) joined by a router; VMs attached by name."""

    host: VirtualHost
    api: Client
    ids: dict[str, str] = field(default_factory=dict)
    vms: dict[str, Vm] = field(default_factory=dict)
    ports: dict[str, dict[str, Any]] = field(default_factory=dict)

    def attach(self, name: str, bridge: str, cidr: str | None = None, gateway: str | None = None) -> Vm:
        vm = self.host.vm(name)
        if cidr is not None:
            vm.address(cidr, gateway)
        port = self.api.collection("ports").create(device_id=self.ids[bridge], name=name)
        self.api.bind_port(port["id"], self.host.host_id, vm.interface)
        self.ports[name] = port
        self.vms[name] = vm
        return vm


def build_cloud(host: VirtualHost, router: bool = True) -> Cloud:
    api = host.client()
    cloud = Cloud(host, api)
    for name in ("web", "db"):
        cloud.ids[name] = api.collection("bridges").create(name=name)["id"]
    if router:
        rtr = api.collection("routers").create(name="rtr")["id"]
        cloud.ids["rtr"] = rtr
        for bridge, third in (("web", 1), ("db", 2)):
            rp = api.collection("ports").create(
                device_id=rtr, name=f"rtr-{bridge}", port_address=f"10.0.{third}.1", network_cidr=f"10.0.{third}.0/24"
            )
            bp = api.collection("ports").create(device_id=cloud.ids[bridge], name=f"{bridge}-up")
            api.link_ports(bp["id"], rp["id"])
            cloud.ports[f"rtr-{bridge}"] = rp
    return cloud


@pytest.fixture
def cloud(host: VirtualHost) -> Cloud:
    return build_cloud(host)
