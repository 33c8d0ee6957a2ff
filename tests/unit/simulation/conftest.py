"""A small cloud built through the real topology service, and helpers to send packets into it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from kumo.flowstate.local import LocalFlowState
from kumo.packet import ip_to_int
from kumo.packet.arp import REQUEST, Arp
from kumo.packet.ethernet import ETH_P_ARP, ETH_P_IP, Ethernet
from kumo.packet.frame import parse_frame
from kumo.packet.icmp import Icmp
from kumo.packet.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP, IPv4
from kumo.packet.tcp import Tcp
from kumo.packet.udp import Udp
from kumo.simulation import MemoryLearned, SimulationResult, simulate
from kumo.simulation.view import snapshot_of
from kumo.topology.service import Topology
from kumo.topology.store.sqlite import SqliteStore

VM1_MAC, VM2_MAC, VM3_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"


def tcp_frame(
    src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int, ttl: int = 64, vlan: int | None = None
) -> bytes:
    s, d = ip_to_int(src), ip_to_int(dst)
    ip = IPv4(s, d, PROTO_TCP, Tcp(sport, dport).build(s, d), ttl=ttl)
    return Ethernet(dst_mac, src_mac, ETH_P_IP, ip.build(), vlan=vlan).build()


def udp_frame(
    src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int, payload: bytes = b"", ttl: int = 64
) -> bytes:
    s, d = ip_to_int(src), ip_to_int(dst)
    ip = IPv4(s, d, PROTO_UDP, Udp(sport, dport, payload).build(s, d), ttl=ttl)
    return Ethernet(dst_mac, src_mac, ETH_P_IP, ip.build()).build()


def ping_frame(src_mac: str, dst_mac: str, src: str, dst: str, ident: int = 7, ttl: int = 64) -> bytes:
    ip = IPv4(ip_to_int(src), ip_to_int(dst), PROTO_ICMP, Icmp.echo(True, ident, 1, b"abc").build(), ttl=ttl)
    return Ethernet(dst_mac, src_mac, ETH_P_IP, ip.build()).build()


def arp_request(src_mac: str, src: str, target: str) -> bytes:
    arp = Arp(REQUEST, src_mac, ip_to_int(src), "00:00:00:00:00:00", ip_to_int(target))
    return Ethernet("ff:ff:ff:ff:ff:ff", src_mac, ETH_P_ARP, arp.build()).build()


@dataclass
class Cloud:
    topo: Topology
    ids: dict[str, str] = field(default_factory=dict)
    learned: MemoryLearned = field(default_factory=MemoryLearned)
    state: LocalFlowState = field(default_factory=LocalFlowState)

    def __getitem__(self, name: str) -> str:
        return self.ids[name]

    def obj(self, kind: str, name: str) -> dict[str, Any]:
        return self.topo.get(kind, self.ids[name])

    def send(self, port: str, frame: bytes, apply: bool = True) -> SimulationResult:
        """Simulate `frame` entering `port`; with `apply`, record state and learning as the agent would."""
        result = simulate(
            parse_frame(frame, self.ids[port]), snapshot_of(self.topo.store), self.learned, self.state, frame
        )
        if apply:
            for write in result.state_writes:
                self.state.record(write.kind, write.key, write.value)
            for learn in result.learn_writes:
                if learn.kind == "mac":
                    self.learned.macs[learn.key] = learn.value
                else:
                    self.learned.arps[learn.key] = learn.value
        return result

    def names(self, ids: list[str]) -> list[str]:
        back = {v: k for k, v in self.ids.items()}
        return [back.get(i, i) for i in ids]


@pytest.fixture
def cloud() -> Iterator[Cloud]:
    """Two bridges (web 10.0.1.0/24, db 10.0.2.0/24) behind a router with an uplink to 192.0.2.0/24.
    VMs: vm1, vm2 on web; vm3 on db. Ports are bound (exterior), router links are interior."""
    c = build_cloud()
    try:
        yield c
    finally:
        c.topo.store.close()


def build_cloud() -> Cloud:
    """The `cloud` fixture's cloud, on a store in memory (close c.topo.store when done)."""
    store = SqliteStore(":memory:")
    topo = Topology(store)
    c = Cloud(topo)
    ids = c.ids
    ids["web"] = topo.create("bridges", {"name": "web"})["id"]
    ids["db"] = topo.create("bridges", {"name": "db"})["id"]
    ids["rtr"] = topo.create("routers", {"name": "rtr"})["id"]
    for i, (name, bridge) in enumerate((("vm1", "web"), ("vm2", "web"), ("vm3", "db"))):
        port = topo.create("ports", {"device_id": ids[bridge], "name": name})
        ids[name] = topo.bind(port["id"], "host-1", f"tap{i}")["id"]
    for net, third in (("web", 1), ("db", 2)):
        rp = topo.create(
            "ports",
            {
                "device_id": ids["rtr"],
                "port_address": f"10.0.{third}.1",
                "network_cidr": f"10.0.{third}.0/24",
                "name": f"rtr-{net}",
            },
        )
        bp = topo.create("ports", {"device_id": ids[net], "name": f"{net}-up"})
        topo.link(bp["id"], rp["id"])
        ids[f"rtr-{net}"], ids[f"{net}-up"] = rp["id"], bp["id"]
    uplink = topo.create(
        "ports",
        {"device_id": ids["rtr"], "port_address": "192.0.2.2", "network_cidr": "192.0.2.0/24", "name": "uplink"},
    )
    ids["uplink"] = topo.bind(uplink["id"], "host-1", "ext0")["id"]
    ids["default"] = topo.create(
        "routes",
        {
            "router_id": ids["rtr"],
            "dst_cidr": "0.0.0.0/0",
            "next_hop_port_id": ids["uplink"],
            "next_hop_gateway": "192.0.2.1",
        },
    )["id"]
    return c
