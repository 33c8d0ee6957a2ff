"""The BGP edge on a Fabric (tests and bench): one router (a 4-byte AS) with a VM on host 1 and two uplinks,
on hosts 2 and 3, each to a BIRD peer of its own in an edge namespace; both edges on one external LAN.

    vm1 10.0.1.11 (host 1) -- router -- uplink a 192.0.2.2    (host 2) -- edge-a 192.0.2.1    AS 65001
                                    \\- uplink b 198.51.100.2 (host 3) -- edge-b 198.51.100.1 AS 65002
    edge-a lan 203.0.113.2, edge-b lan 203.0.113.3 -- the external LAN (a bridge in `ext`) -- ext 203.0.113.10

The BIRDs announce the LAN (203.0.113.0/24) and put what Kumo announces (10.0.1.0/24) in their edge's
kernel; the router has no static route to the outside. `ext` answers the VM network through edge-b, which
also has a static route to it under BGP's: replies keep coming back while a test has b's session down.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kumo.client import Client
from kumo.testing.bird import Bird, peer_config
from kumo.testing.fabric import Fabric
from kumo.testing.netns import Vm, ip

ROUTER_ASN = 4200065100  # a 4-byte AS number (RFC 6793): BIRD and ExaBGP both speak them
VM_NETWORK = "10.0.1.0/24"
EXTERNAL = "203.0.113.0/24"
EXT_HOST = "203.0.113.10"
UPLINKS = {  # name: (host index, port address, peer address, peer AS, LAN address)
    "a": (1, "192.0.2.2", "192.0.2.1", 65001, "203.0.113.2"),
    "b": (2, "198.51.100.2", "198.51.100.1", 65002, "203.0.113.3"),
    # two more, for four equal uplinks (bench/edge_bench.py)
    "c": (1, "100.65.0.2", "100.65.0.1", 65003, "203.0.113.4"),
    "d": (2, "100.66.0.2", "100.66.0.1", 65004, "203.0.113.5"),
}


@dataclass
class BgpEdge:
    fabric: Fabric
    api: Client
    router_id: str
    vm1: Vm
    ext: Vm
    edges: dict[str, Vm] = field(default_factory=dict)
    birds: dict[str, Bird] = field(default_factory=dict)
    uplinks: dict[str, str] = field(default_factory=dict)  # name -> router port id
    peers: dict[str, str] = field(default_factory=dict)  # name -> bgp peer id

    def peer(self, name: str) -> dict[str, Any]:
        return self.api.bgp_peers.get(self.peers[name])

    def routes(self, dst: str = EXTERNAL) -> list[dict[str, Any]]:
        return [r for r in self.api.routes.list(router_id=self.router_id) if r["dst_cidr"] == dst]

    def stop(self) -> None:
        for bird in self.birds.values():
            bird.stop(kill=True)


def build_bgp_edge(
    fabric: Fabric,
    workdir: Path,
    hold_time: int = 9,
    passwords: dict[str, str] | None = None,
    names: tuple[str, ...] = ("a", "b"),
) -> BgpEdge:
    """The topology with the uplinks `names` of UPLINKS, their BIRDs started (their sessions come up on their
    own: wait for them)."""
    hosts = fabric.hosts
    api = fabric.client()
    bridge = api.collection("bridges").create(name="tenant")["id"]
    rid = api.collection("routers").create(name="edge", asn=ROUTER_ASN)["id"]
    rp = api.collection("ports").create(device_id=rid, port_address="10.0.1.1", network_cidr=VM_NETWORK)
    bp = api.collection("ports").create(device_id=bridge)
    api.link_ports(bp["id"], rp["id"])
    vm1 = hosts[0].vm("vm1")
    vm1.address("10.0.1.11/24", "10.0.1.1")
    vm_port = api.collection("ports").create(device_id=bridge, name="vm1")
    api.bind_port(vm_port["id"], hosts[0].host_id, vm1.interface)
    api.bgp_networks.create(router_id=rid, cidr=VM_NETWORK)

    ext = hosts[0].vm("ext")  # (its eth0 into host 1 stays unused: the LAN is a bridge inside it)
    ext.run("ip", "link", "add", "lan", "type", "bridge", check=True)
    ext.run("ip", "addr", "add", f"{EXT_HOST}/24", "dev", "lan", check=True)
    ext.run("ip", "link", "set", "lan", "up", check=True)
    ext.run("ip", "route", "add", VM_NETWORK, "via", UPLINKS["b"][4], check=True)
    out = BgpEdge(fabric, api, rid, vm1, ext)
    for name in names:
        index, address, peer_address, peer_asn, lan_address = UPLINKS[name]
        host = hosts[index]
        edge = host.vm(f"edge-{name}")
        edge.run("ip", "addr", "add", f"{peer_address}/24", "dev", "eth0", check=True)
        leg = f"l{fabric.tag}{name}"
        ip("-n", ext.netns, "link", "add", leg, "type", "veth", "peer", "name", "lan", "netns", edge.netns)
        ip("-n", ext.netns, "link", "set", leg, "master", "lan", "up")
        edge.run("ip", "addr", "add", f"{lan_address}/24", "dev", "lan", check=True)
        edge.run("ip", "link", "set", "lan", "up", check=True)
        for setting in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0"):
            edge.run("sysctl", "-qw", setting, check=True)
        # a fallback under BGP's route (metric 32): the uplink still forwards while its session is down
        edge.run("ip", "route", "add", VM_NETWORK, "via", address, "metric", "1000", check=True)
        network = address.rsplit(".", 1)[0] + ".0/24"
        port = api.collection("ports").create(
            device_id=rid, name=f"uplink-{name}", port_address=address, network_cidr=network
        )
        api.bind_port(port["id"], host.host_id, edge.interface)
        password = (passwords or {}).get(name)
        config = peer_config(peer_address, peer_asn, address, ROUTER_ASN, hold_time=hold_time, password=password)
        out.birds[name] = Bird(edge.netns, workdir, f"{fabric.tag}-{name}", config).start()
        peer = {"router_id": rid, "asn": peer_asn, "address": peer_address, "hold_time": hold_time}
        peer["keepalive"] = max(1, hold_time // 3)
        if password:
            peer["password"] = password
        out.peers[name] = api.bgp_peers.create(**peer)["id"]
        out.edges[name], out.uplinks[name] = edge, port["id"]
    return out


# --- traffic ----------------------------------------------------------------------------------------------
_SERVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(256); s.settimeout(1.0)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    c.settimeout(2.0)
    try:
        c.sendall(c.recv(64) or b"")
    except OSError:
        pass
    c.close()
"""

_CLIENT = """
import socket, sys
host, port, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ok = 0
for sport in range(first, first + count):
    c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); c.settimeout(3.0)
    try:
        c.bind(("0.0.0.0", sport)); c.connect((host, port)); c.sendall(b"k")
        ok += c.recv(1) == b"k"
    except OSError:
        pass
    c.close()
print(ok)
"""


def serve_tcp(vm: Vm, port: int, seconds: float) -> subprocess.Popen[str]:
    """An echo server of one message per connection in `vm`, for `seconds` at most; returned once it listens
    (a client that connects earlier is refused at once, and a loop of them is over before it starts)."""
    server = vm.popen(sys.executable, "-c", _SERVER, str(port), str(seconds), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while f":{port} " not in vm.run("ss", "-Hltn").stdout:
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise RuntimeError(f"the test's TCP server in {vm.name} is not listening on {port}")
        time.sleep(0.05)
    return server


def tcp_flows(vm: Vm, host: str, port: int, first_sport: int, count: int) -> int:
    """`count` TCP connections from source ports first_sport...: how many got their byte echoed."""
    done = vm.run(sys.executable, "-c", _CLIENT, host, str(port), str(first_sport), str(count), timeout=count * 4 + 10)
    return int(done.stdout.strip() or 0)


def capture_syns(edge: Vm, port: int, seconds: float) -> subprocess.Popen[str]:
    """tcpdump of the SYNs towards `port` crossing an edge's uplink side (eth0), for `seconds`."""
    syn = f"tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0 and dst port {port}"
    return edge.popen(
        "timeout", str(seconds), "tcpdump", "-n", "-l", "-i", "eth0", syn,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def source_ports(capture: subprocess.Popen[str]) -> set[int]:
    """The source ports of a finished capture_syns."""
    out, _ = capture.communicate(timeout=60)
    ports = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[1] == "IP":
            ports.add(int(fields[2].rsplit(".", 1)[1]))
    return ports
