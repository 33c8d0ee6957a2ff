"""A small two-tenant cloud on a VirtualHost, built through the REST API: bridges web (10.0.1.0/24) and db
(10.0.2.0/24) joined by router rtr; VMs attached by name. Shared by the integration tests and bench/."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kumo.client import Client
from kumo.testing.netns import VirtualHost, Vm


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
