"""Many hosts: `kumo agent` processes in three host namespaces on one underlay, a real ZooKeeper, two API
servers, VXLAN tunnels between the hosts' datapaths (kumo.testing.fabric)."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kumo.agent.push import encode
from kumo.agent.pushkey import CLUSTER_KEYS, PUSH_KEY
from kumo.client import ApiError, Client
from kumo.datapath.layout import MAX_OUT
from kumo.packet import ip_to_int
from kumo.packet.ethernet import ETH_P_IP, Ethernet
from kumo.packet.ipv4 import PROTO_UDP, IPv4
from kumo.packet.udp import Udp
from kumo.simulation.result import StateWrite
from kumo.testing.fabric import Fabric, FabricHost, two_legged, underlay_capture
from kumo.testing.netns import Vm, inside
from kumo.topology.store import open_store
from tests.integration.helpers import (
    BROADCASTS,
    CONNECT_FROM_PORTS,
    all_received,
    broadcast,
    describe,
    echo_servers,
    iperf3_rates,
    received,
    server_firewall,
    start_iperf3,
    until,
    wait_ping,
)

UDP_COUNT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1]))); s.settimeout(3)
n = 0
try:
    while True:
        s.recv(64); n += 1
except OSError:
    pass
print(n)
"""

UDP_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[3])):
    s.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
"""


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fabric]:
    with Fabric(tmp_path_factory.mktemp("fabric"), hosts=3, api_servers=2) as f:
        yield f


@pytest.fixture
def api(fabric: Fabric) -> Iterator[Client]:
    with inside(fabric.netns):
        yield fabric.client()


class Tenant:
    """A test's own bridges and VMs on the fabric (removed after the test: the fabric is shared)."""

    def __init__(self, fabric: Fabric, api: Client) -> None:
        self.fabric, self.api = fabric, api
        self.ids: dict[str, str] = {}
        self.ports: dict[str, dict[str, Any]] = {}
        self.vms: dict[str, tuple[Vm, FabricHost]] = {}

    def bridge(self, name: str) -> str:
        self.ids[name] = self.api.collection("bridges").create(name=name)["id"]
        return self.ids[name]

    def vm(self, name: str, host: FabricHost, bridge: str, cidr: str, gateway: str | None = None) -> Vm:
        vm = host.vm(name)
        vm.address(cidr, gateway)
        port = self.api.collection("ports").create(device_id=self.ids[bridge], name=name)
        self.api.bind_port(port["id"], host.host_id, vm.interface)
        self.ports[name] = port
        self.vms[name] = (vm, host)
        return vm

    def router(self, name: str, bridges: dict[str, str]) -> str:
        """A router with a port on each bridge (bridge name -> its gateway address, /24)."""
        rid = self.api.collection("routers").create(name=name)["id"]
        self.ids[name] = rid
        for bridge, address in bridges.items():
            network = address.rsplit(".", 1)[0] + ".0/24"
            rp = self.api.collection("ports").create(device_id=rid, port_address=address, network_cidr=network)
            bp = self.api.collection("ports").create(device_id=self.ids[bridge])
            self.api.link_ports(bp["id"], rp["id"])
        return rid

    def remove(self) -> None:
        for vm, host in self.vms.values():
            subprocess.run(["ip", "netns", "del", vm.netns], capture_output=True)
            if vm in host.vms:
                host.vms.remove(vm)
        for kind in ("routers", "bridges"):
            for obj in self.api.collection(kind).list():
                if obj["id"] in self.ids.values():
                    self.api.collection(kind).delete(obj["id"])


@pytest.fixture
def tenant(fabric: Fabric, api: Client) -> Iterator[Tenant]:
    t = Tenant(fabric, api)
    try:
        yield t
    finally:
        t.remove()


def answers(api: Client) -> bool:
    """Whether the API server can reach the store (it reconnects on its own after an outage)."""
    try:
        api.collection("hosts").list()
    except ApiError:
        return False
    return True


def upcalls(host: FabricHost) -> int:
    return int(host.agent_stats()["datapath"]["upcall"])


def tunnel(host: FabricHost, peer: FabricHost) -> dict[str, Any]:
    """What `host`'s kernel counted of its tunnel traffic with `peer`."""
    return dict(host.agent_stats()["tunnel_peers"][peer.host_id])


def alive(api: Client, host: FabricHost) -> bool:
    return bool(api.collection("hosts").get(host.host_id)["alive"])


def test_a_bridge_spans_three_hosts_over_vxlan_keyed_by_the_egress_port(fabric: Fabric, tenant: Tenant) -> None:
    h1, h2, h3 = fabric.hosts
    tenant.bridge("b")
    vm1 = tenant.vm("a1", h1, "b", "10.0.1.11/24")
    vm2 = tenant.vm("a2", h2, "b", "10.0.1.12/24")
    vm3 = tenant.vm("a3", h3, "b", "10.0.1.13/24")
    assert (
        wait_ping(vm1, "10.0.1.12", within=8.0)
        and wait_ping(vm1, "10.0.1.13", within=8.0)
        and wait_ping(vm2, "10.0.1.13", within=8.0)
    )

    # TCP across hosts, at VM MTU 1450 inside VXLAN on a 1500 underlay
    rates = iperf3_rates(*start_iperf3(vm1, vm2, "10.0.1.12", 2), timeout=30)
    assert rates and min(rates) > 0

    # On the wire: VXLAN to UDP 4789, VNI = the egress port's tunnel key. And the egress host delivers by
    # VNI from its pre-installed map: no upcall there for a flow that only enters it through the tunnel.
    vms = {"10.0.1.11": vm1, "10.0.1.12": vm2, "10.0.1.13": vm3}
    for vm in vms.values():  # static neighbours: no ARP probe causes an upcall while we count
        for address, other in vms.items():
            if other is not vm:
                vm.run("ip", "neigh", "replace", address, "lladdr", other.mac, "dev", "eth0", check=True)
    capture = underlay_capture(h2, count=5, seconds=10)
    counter = vm2.popen(sys.executable, "-c", UDP_COUNT, "9999", stdout=subprocess.PIPE)
    time.sleep(0.7)
    before = upcalls(h2)
    delivered = h2.agent_stats()["datapath"]["tunnel_delivered"]
    sent_before, received_before = tunnel(h1, h2)["tx_packets"], tunnel(h2, h1)["rx_packets"]
    vm1.run(sys.executable, "-c", UDP_SEND, "10.0.1.12", "9999", "5", check=True)
    received = int(counter.communicate(timeout=10)[0].strip() or 0)
    seen, _ = capture.communicate(timeout=15)
    assert received == 5
    assert upcalls(h2) == before, f"the egress host must not simulate a tunnelled packet: {h2.flows()}"
    assert not [f for f in h2.flows() if f["match"].get("tp_dst") == 9999]
    assert h2.agent_stats()["datapath"]["tunnel_delivered"] >= delivered + 5
    # counted per peer host, by both kernels (`kumo agent stats` tunnel_peers; kumo_tunnel_* metrics)
    assert tunnel(h1, h2)["tx_packets"] >= sent_before + 5 and tunnel(h1, h2)["address"] == h2.tunnel_ip
    assert tunnel(h2, h1)["rx_packets"] >= received_before + 5 and tunnel(h2, h1)["rx_bytes"] > 0
    vnis = {int(v) for v in re.findall(r"vni (\d+)", seen)}
    assert vnis == {tenant.ports["a2"]["tunnel_key"]}, seen
    assert f"{h1.tunnel_ip}." in seen and f"> {h2.tunnel_ip}.4789" in seen, seen


def test_routing_across_hosts_with_the_chains_applied_on_the_ingress_host(
    fabric: Fabric, tenant: Tenant, api: Client
) -> None:
    h1, h2, h3 = fabric.hosts
    tenant.bridge("web")
    tenant.bridge("db")
    tenant.router("rtr", {"web": "10.0.1.1", "db": "10.0.2.1"})
    vm1 = tenant.vm("r1", h1, "web", "10.0.1.11/24", "10.0.1.1")
    tenant.vm("r2", h2, "db", "10.0.2.12/24", "10.0.2.1")
    tenant.vm("r3", h3, "db", "10.0.2.13/24", "10.0.2.1")
    assert wait_ping(vm1, "10.0.2.12", within=8.0) and wait_ping(vm1, "10.0.2.13", within=8.0)

    chain = api.collection("chains").create(name="r1-in")["id"]
    tenant.ids["chain"] = chain
    api.collection("rules").create(chain_id=chain, type="drop", nw_proto=1, nw_dst="10.0.2.13/32")
    api.collection("ports").update(tenant.ports["r1"]["id"], inbound_filter_id=chain)
    try:
        assert until(lambda: not vm1.ping("10.0.2.13", wait=0.5), 5.0)
        tunnelled = h3.agent_stats()["datapath"]["tunnel_rx"]
        assert not vm1.ping("10.0.2.13", count=3, wait=0.5)
        assert h3.agent_stats()["datapath"]["tunnel_rx"] == tunnelled, "dropped on the ingress host, not sent"
        assert any(f["actions"] == ["drop"] and f["match"].get("ip_dst") == "10.0.2.13" for f in h1.flows())
        assert wait_ping(vm1, "10.0.2.12", within=8.0)  # the rule only names vm r3
    finally:
        api.collection("ports").update(tenant.ports["r1"]["id"], inbound_filter_id=None)
        api.collection("chains").delete(chain)
    assert wait_ping(vm1, "10.0.2.13", within=8.0)


def test_connections_through_a_firewall_on_another_host_are_tracked_by_both_kernels(
    fabric: Fabric, tenant: Tenant, api: Client
) -> None:
    """A match_return_flow firewall on the server's port, the client on another host: the server's host records
    each connection as its reply leaves, and the client's host as it arrives (the zone's tag in the VXLAN GBP
    field), so that the client's next packet is recognised there: once the path is known, new connections
    reach neither agent. A new connection to another port of the server is still refused."""
    h1, h2, _ = fabric.hosts
    tenant.bridge("cweb")
    tenant.bridge("cdb")
    tenant.router("crtr", {"cweb": "10.0.1.1", "cdb": "10.0.2.1"})
    client = tenant.vm("c1", h1, "cweb", "10.0.1.11/24", "10.0.1.1")
    server = tenant.vm("c2", h2, "cdb", "10.0.2.12/24", "10.0.2.1")
    assert wait_ping(client, "10.0.2.12", within=8.0)
    chain = server_firewall(api, tenant.ports["c2"]["id"], "c2-in")
    try:
        with echo_servers(server, "8080", "8081"):
            client.run(sys.executable, "-c", CONNECT_FROM_PORTS, "10.0.2.12", "8080", "33000", "33003", check=True)
            before = [host.agent_stats() for host in (h1, h2)]
            client.run(sys.executable, "-c", CONNECT_FROM_PORTS, "10.0.2.12", "8080", "33003", "33053", check=True)
            after = [host.agent_stats() for host in (h1, h2)]
            calls = [a["agent"]["upcalls"] - b["agent"]["upcalls"] for a, b in zip(after, before, strict=True)]
            assert sum(calls) <= 4, (calls, describe(fabric))
            recorded = after[0]["datapath"]["ct_recorded"] - before[0]["datapath"]["ct_recorded"]
            assert recorded >= 50, after[0]["datapath"]  # (the client's host records from the tunnel)
            assert not client.connects("10.0.2.12", 8081), "a new connection to another port went through"
            assert client.connects("10.0.2.12", 8080)
    finally:
        api.collection("ports").update(tenant.ports["c2"]["id"], outbound_filter_id=None)
        api.collection("chains").delete(chain)


def test_a_broadcast_reaches_its_bridge_on_every_host_and_no_other_bridge(fabric: Fabric, tenant: Tenant) -> None:
    h1, h2, h3 = fabric.hosts
    tenant.bridge("b1")
    tenant.bridge("b2")
    vm1 = tenant.vm("c1", h1, "b1", "10.0.1.11/24")
    same = [tenant.vm("c2", h2, "b1", "10.0.1.12/24"), tenant.vm("c3", h3, "b1", "10.0.1.13/24")]
    other = [tenant.vm("d2", h2, "b2", "10.0.1.22/24"), tenant.vm("d3", h3, "b2", "10.0.1.23/24")]
    assert wait_ping(vm1, "10.0.1.12", within=8.0)  # (bindings followed everywhere)
    captures = {
        vm.name: vm.popen(
            "timeout",
            "4",
            "tcpdump",
            "-n",
            "-l",
            "-i",
            "eth0",
            "arp",
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        for vm in same + other
    }
    time.sleep(1.0)
    vm1.ping("10.0.1.99", wait=0.5)  # nobody has it: the ARP request is broadcast
    seen = {name: proc.communicate(timeout=10)[0] for name, proc in captures.items()}
    for vm in same:
        assert "Request who-has 10.0.1.99" in seen[vm.name], seen
    for vm in other:
        assert "10.0.1.99" not in seen[vm.name], seen


def test_a_flood_wider_than_one_kernel_value_reaches_every_host_through_its_links(
    fabric: Fabric, tenant: Tenant
) -> None:
    """A broadcast from h1 to a bridge with 9 ports on each of the two other hosts and 2 on h1: 20 outputs,
    18 of them tunnelled (one VNI each), in a chain of links. Every VM gets every broadcast."""
    h1, h2, h3 = fabric.hosts
    tenant.bridge("wide")
    sender = tenant.vm("w0", h1, "wide", "10.0.1.10/24")
    hosts = {i: h1 if i < 3 else (h2, h3)[i % 2] for i in range(1, 21)}
    others = [tenant.vm(f"w{i}", host, "wide", f"10.0.1.{10 + i}/24") for i, host in hosts.items()]
    assert len(others) > MAX_OUT
    for i in hosts:  # (each binding followed on every host)
        assert wait_ping(sender, f"10.0.1.{10 + i}", within=8.0), describe(fabric)
    before = {vm.name: received(vm) for vm in others}
    broadcast(sender)
    got = all_received(others, before)
    assert min(got.values()) >= BROADCASTS, (got, describe(fabric))
    assert h1.agent_stats()["datapath"]["flood_link_missing"] == 0


def test_a_killed_agent_leaves_its_flows_forwarding_its_host_dead_and_a_restart_resumes(
    fabric: Fabric, tenant: Tenant, api: Client
) -> None:
    h1, h2, _ = fabric.hosts
    tenant.bridge("k")
    vm1 = tenant.vm("k1", h1, "k", "10.0.1.11/24")
    vm2 = tenant.vm("k2", h2, "k", "10.0.1.12/24")
    assert wait_ping(vm1, "10.0.1.12", within=8.0)
    srv, cli = start_iperf3(vm1, vm2, "10.0.1.12", 6)
    try:
        time.sleep(1.5)
        h2.kill_agent()  # SIGKILL: no clean-up at all
        rates = iperf3_rates(srv, cli, timeout=30)
        assert len(rates) >= 5 and min(rates) > 0, rates  # established traffic kept flowing
        assert until(lambda: not alive(api, h2), 25.0), "the host shows dead once its session times out"
        assert until(lambda: not [e for e in api.mac_table(tenant.ids["k"]) if e["host_id"] == h2.host_id], 5.0)
    finally:
        h2.start_agent()
    assert until(lambda: alive(api, h2), 10.0)
    assert h2.agent_stats()["agent"].get("adopt_kept", 0) + h2.agent_stats()["agent"].get("adopt_replaced", 0) > 0
    vm3 = tenant.vm("k3", h2, "k", "10.0.1.13/24")  # a new port on the restarted host: served again
    assert wait_ping(vm1, "10.0.1.13", within=8.0) and wait_ping(vm3, "10.0.1.11", within=8.0)


def quick_neighbours(*vms: Vm) -> None:
    """Neighbour entries that go stale within about a second and are probed a second after their next use
    (the kernel's defaults: 15-45 s and 5 s), so that a test sees ARP refreshes within seconds."""
    for vm in vms:
        vm.run("sysctl", "-qw", "net.ipv4.neigh.eth0.base_reachable_time_ms=1000", check=True)
        vm.run("sysctl", "-qw", "net.ipv4.neigh.eth0.delay_first_probe_time=1", check=True)


def test_established_traffic_outlives_a_killed_agent_after_a_history_and_past_the_session_timeout(
    fabric: Fabric, tenant: Tenant, api: Client
) -> None:
    """Issue 21: a stream stopped ~5 s after its sender's agent was killed, once the VMs' neighbour entries
    needed refreshing: the receiver's unicast ARP probe was answered by a sender whose host had no agent to
    forward the reply. The kernel answers such probes now (kumo.agent.arpanswers)."""
    h1, h2, h3 = fabric.hosts
    # the history: VMs on three hosts and two bridges, a flood across hosts, both bridges deleted
    tenant.bridge("ha")
    tenant.bridge("hb")
    a1, a2 = tenant.vm("ha1", h1, "ha", "10.0.1.11/24"), tenant.vm("ha2", h2, "ha", "10.0.1.12/24")
    tenant.vm("ha3", h3, "ha", "10.0.1.13/24")
    b1 = tenant.vm("hb1", h1, "hb", "10.0.1.21/24")
    tenant.vm("hb3", h3, "hb", "10.0.1.23/24")
    assert wait_ping(a1, "10.0.1.12") and wait_ping(a2, "10.0.1.13") and wait_ping(b1, "10.0.1.23")
    a1.ping("10.0.1.99", count=2, wait=0.5)  # ARP for nobody: a flood to every host of the bridge
    for name in ("ha", "hb"):
        api.collection("bridges").delete(tenant.ids.pop(name))
    tenant.bridge("k")
    vm1 = tenant.vm("kn1", h1, "k", "10.0.2.11/24")
    vm2 = tenant.vm("kn2", h2, "k", "10.0.2.12/24")
    quick_neighbours(vm1, vm2)
    assert wait_ping(vm1, "10.0.2.12", within=8.0)
    answered = h2.agent_stats()["datapath"]["arp_answered"]
    srv, cli = start_iperf3(vm1, vm2, "10.0.2.12", 20)  # well past the store session timeout (10 s)
    try:
        time.sleep(3)
        h1.kill_agent()
        rates = iperf3_rates(srv, cli, timeout=60)
        assert len(rates) >= 19 and min(rates) > 0, rates
        assert not alive(api, h1), "host 1 shows dead (its session timed out during the stream)"
        # the VMs' probes were answered by the kernel on both hosts (host 2's count is readable)
        assert h2.agent_stats()["datapath"]["arp_answered"] > answered
    finally:
        h1.start_agent()
    assert until(lambda: alive(api, h1), 10.0)
    assert wait_ping(vm1, "10.0.2.12", within=8.0)


def test_a_zookeeper_outage_does_not_stop_traffic_and_agents_reconnect(fabric: Fabric, tenant: Tenant) -> None:
    h1, _, h3 = fabric.hosts
    tenant.bridge("z")
    vm1 = tenant.vm("z1", h1, "z", "10.0.1.11/24")
    vm3 = tenant.vm("z3", h3, "z", "10.0.1.13/24")
    assert wait_ping(vm1, "10.0.1.13", within=8.0)
    srv, cli = start_iperf3(vm1, vm3, "10.0.1.13", 10)
    try:
        time.sleep(1.5)
        fabric.zookeeper.stop()
        time.sleep(5.0)
    finally:
        fabric.zookeeper.start()
    rates = iperf3_rates(srv, cli, timeout=40)
    assert len(rates) >= 9 and min(rates) > 0, rates  # never a second without traffic
    assert until(lambda: answers(tenant.api), 30.0), "the API server is connected to ZooKeeper again"
    # new flows again once the agents are back: new ports on both hosts, bound through the store
    vm1b = tenant.vm("z1b", h1, "z", "10.0.1.21/24")
    vm3b = tenant.vm("z3b", h3, "z", "10.0.1.23/24")
    assert wait_ping(vm1b, "10.0.1.23", within=15.0) and wait_ping(vm3b, "10.0.1.11", within=8.0)


def test_a_migrated_vm_answers_within_two_seconds_of_the_rebinding(fabric: Fabric, tenant: Tenant, api: Client) -> None:
    h1, h2, h3 = fabric.hosts
    tenant.bridge("m")
    mover = tenant.vm("m1", h1, "m", "10.0.1.11/24")
    peer = tenant.vm("m3", h3, "m", "10.0.1.13/24")
    assert wait_ping(peer, "10.0.1.11", within=8.0)
    # the VM moves: its interface leaves host 1 and appears on host 2 (same namespace, MAC and address)
    h1.unplug(mover)
    h1.vms.remove(mover)
    h2.plug(mover)
    h2.vms.append(mover)
    tenant.vms["m1"] = (mover, h2)
    mover.address("10.0.1.11/24")
    start = time.monotonic()
    api.bind_port(tenant.ports["m1"]["id"], h2.host_id, mover.interface)
    answered = until(lambda: peer.ping("10.0.1.11", wait=0.2), 5.0, step=0.0)
    took = time.monotonic() - start
    assert answered and took < 2.0, f"answered={answered} after {took:.2f} s"
    assert h1.agent_stats()["ports_attached"] <= len(h1.vms)  # (host 1 let go of the port)


def test_a_change_through_either_api_server_removes_the_dependent_flows_on_every_host(
    fabric: Fabric, tenant: Tenant, api: Client
) -> None:
    tenant.bridge("p")
    vms = [tenant.vm(f"p{h.index}", h, "p", f"10.0.1.{10 + h.index}/24") for h in fabric.hosts]
    chain = api.collection("chains").create(name="p-filter")["id"]
    tenant.ids["chain"] = chain
    api.collection("bridges").update(tenant.ids["p"], inbound_filter_id=chain)
    try:
        for vm in vms:
            others = [f"10.0.1.{10 + h.index}" for h in fabric.hosts if h.netns not in vm.netns]
            assert all(wait_ping(vm, o, within=8.0) for o in others)
        removed = {h.host_id: h.agent_stats()["agent"].get("flows_removed", 0) for h in fabric.hosts}
        second = fabric.client(1)  # the other API server
        rule = second.collection("rules").create(chain_id=chain, type="drop", nw_proto=1)
        for h in fabric.hosts:  # every host dropped the flows that went through the chain
            assert until(lambda h=h: h.agent_stats()["agent"].get("flows_removed", 0) > removed[h.host_id], 5.0)
        assert until(lambda: not vms[0].ping("10.0.1.12", wait=0.5), 5.0)
        second.collection("rules").delete(rule["id"])
        assert wait_ping(vms[0], "10.0.1.12", within=8.0) and wait_ping(vms[2], "10.0.1.11", within=8.0)
    finally:
        api.collection("bridges").update(tenant.ids["p"], inbound_filter_id=None)
        api.collection("chains").delete(chain)


def test_host_list_shows_liveness(fabric: Fabric) -> None:
    host = fabric.hosts[0]
    done = subprocess.run(
        [*["ip", "netns", "exec", fabric.netns], sys.executable, "-m", "kumo.cli.main", "--json", "host", "list"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"KUMO_API": "http://127.0.0.1:8181", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    rows = {row["id"]: row for row in json.loads(done.stdout)}
    assert rows[host.host_id]["alive"] is True and host.tunnel_ip in rows[host.host_id]["addresses"]


def test_a_host_cut_off_past_its_session_timeout_registers_again_when_it_returns(
    fabric: Fabric, tenant: Tenant, api: Client
) -> None:
    h1, _, h3 = fabric.hosts
    tenant.bridge("x")
    vm1 = tenant.vm("x1", h1, "x", "10.0.1.11/24")
    tenant.vm("x3", h3, "x", "10.0.1.13/24")
    assert wait_ping(vm1, "10.0.1.13", within=8.0)
    expired = h3.agent_stats()["agent"].get("store_session_expired", 0)
    subprocess.run([*h3.prefix, "ip", "link", "set", "underlay0", "down"], check=True)
    try:
        assert until(lambda: not alive(api, h3), 25.0), "ZooKeeper ends the session of a host it cannot hear"
    finally:
        subprocess.run([*h3.prefix, "ip", "link", "set", "underlay0", "up"], check=True)
    assert until(lambda: alive(api, h3), 20.0), "the agent registers again under its new session"
    assert h3.agent_stats()["agent"].get("store_session_expired", 0) == expired + 1
    assert wait_ping(vm1, "10.0.1.13", within=8.0)


def tunnel_remotes(host: FabricHost, ip_dst: str) -> set[str]:
    """The remote tunnel ends of `host`'s kernel flows towards `ip_dst`."""
    flows = [f for f in host.flows() if f["match"].get("ip_dst") == ip_dst]
    return set(re.findall(r"remote=([\d.]+)", " ".join(" ".join(f["actions"]) for f in flows)))


def test_routes_through_a_dead_hosts_uplink_are_withdrawn_and_come_back(
    fabric: Fabric, tenant: Tenant, api: Client
) -> None:
    h1, h2, h3 = fabric.hosts
    tenant.bridge("w")
    rid = tenant.router("edge", {"w": "10.0.1.1"})
    vm = tenant.vm("w1", h1, "w", "10.0.1.11/24", "10.0.1.1")
    # "outside": one namespace behind two uplinks, A (192.0.2.0/24) on host 2 and B (198.51.100.0/24) on
    # host 3; it answers from 203.0.113.1 and always replies through B.
    outside, leg_b = two_legged(h2, h3, "out")
    tenant.vms["out"] = (outside, h2)
    outside.run("ip", "addr", "add", "203.0.113.1/32", "dev", "lo", check=True)
    outside.run("ip", "route", "add", "10.0.1.0/24", "via", "198.51.100.2", check=True)
    uplinks = {}
    for name, host, interface, address in (
        ("a", h2, outside.interface, "192.0.2.2"),
        ("b", h3, leg_b, "198.51.100.2"),
    ):
        network = address.rsplit(".", 1)[0] + ".0/24"
        port = api.collection("ports").create(device_id=rid, port_address=address, network_cidr=network)
        api.bind_port(port["id"], host.host_id, interface)
        uplinks[name] = port["id"]
    routes = api.collection("routes")
    routes.create(router_id=rid, dst_cidr="203.0.113.0/24", next_hop_port_id=uplinks["a"], next_hop_gateway="192.0.2.1")
    routes.create(
        router_id=rid,
        dst_cidr="203.0.113.0/24",
        next_hop_port_id=uplinks["b"],
        next_hop_gateway="198.51.100.1",
        weight=200,
    )
    assert wait_ping(vm, "203.0.113.1", within=8.0), describe(fabric)
    assert tunnel_remotes(h1, "203.0.113.1") == {h2.tunnel_ip}  # the preferred route: uplink A on host 2

    h2.kill_agent()
    try:
        assert until(lambda: not alive(api, h2), 25.0)
        # withdrawn: host 1 re-simulated its flows and now sends through uplink B on host 3
        assert until(
            lambda: vm.ping("203.0.113.1", wait=0.5) and tunnel_remotes(h1, "203.0.113.1") == {h3.tunnel_ip}, 10.0
        )
    finally:
        h2.start_agent()
    assert until(lambda: alive(api, h2), 10.0)
    via_a = {h2.tunnel_ip}
    assert until(lambda: vm.ping("203.0.113.1", wait=0.5) and tunnel_remotes(h1, "203.0.113.1") == via_a, 10.0)


def test_an_agent_started_while_zookeeper_is_down_waits_for_it_instead_of_exiting(fabric: Fabric, api: Client) -> None:
    """Issue 21: an agent whose start-up met a store outage (a dead leader, a lost quorum) exited with rc 1.
    It now tries again with back-off, logs why, and comes up when the store does."""
    h3 = fabric.hosts[2]
    h3.stop_agent()
    fabric.zookeeper.stop()
    back = threading.Timer(12.0, fabric.zookeeper.start)  # longer than connecting may take (10 s)
    back.start()
    try:
        started = time.monotonic()
        h3.start_agent()  # ready once ZooKeeper is back: an agent that gave up would have exited at once
        assert time.monotonic() - started > 11.0
    finally:
        back.join()
    assert until(lambda: answers(api), 30.0), "the API server is connected to ZooKeeper again"
    assert until(lambda: alive(api, h3), 20.0)
    assert "the store is unavailable while the agent starts" in (fabric.workdir / "host-3.log").read_text()


SEND_PUSH = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[2], 0))
data = bytes.fromhex(sys.stdin.read().strip())
for _ in range(int(sys.argv[3])):
    s.sendto(data, (sys.argv[1], 4792))
"""


def test_a_forged_state_push_changes_nothing_and_a_replayed_one_is_refused(fabric: Fabric) -> None:
    h1, h2, _ = fabric.hosts
    write = [StateWrite("conntrack", (6, 1, 2, 3, 4, "forged-device"))]

    def send(datagram: bytes, times: int = 1) -> None:
        done = subprocess.run(
            [*h2.prefix, sys.executable, "-c", SEND_PUSH, h1.tunnel_ip, h2.tunnel_ip, str(times)],
            input=datagram.hex(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr

    def counter(name: str) -> int:
        return int(h1.agent_stats()["agent"].get(name, 0))

    before = {name: counter(name) for name in ("push_bad_mac", "push_replayed", "state_received")}
    # from a peer's own underlay address, but without the cluster's key
    send(encode(h2.host_id, write, b"not the cluster key".ljust(32, b"!")))
    assert until(lambda: counter("push_bad_mac") == before["push_bad_mac"] + 1, 5.0)
    assert counter("state_received") == before["state_received"]
    # a genuine one (made here with the cluster's key, as host 2's agent would), sent twice: taken once
    with inside(fabric.netns), open_store(fabric.store_url) as store:
        row = store.state_get(CLUSTER_KEYS, PUSH_KEY)
    assert row is not None
    send(encode(h2.host_id, write, bytes.fromhex(row["key"]), seq=10**9), times=2)
    assert until(lambda: counter("push_replayed") == before["push_replayed"] + 1, 5.0)
    assert counter("state_received") == before["state_received"] + 1


SEND_UDP = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
data = bytes.fromhex(sys.stdin.read().strip())
for _ in range(int(sys.argv[3])):
    s.sendto(data, (sys.argv[1], int(sys.argv[2])))
"""


def test_a_vxlan_packet_from_a_host_outside_the_tunnel_zone_reaches_no_vm(fabric: Fabric, tenant: Tenant) -> None:
    h1, h2, _ = fabric.hosts
    tenant.bridge("v")
    vm = tenant.vm("v2", h2, "v", "10.0.1.22/24")
    vni = int(tenant.ports["v2"]["tunnel_key"])
    src, dst = ip_to_int("10.0.1.99"), ip_to_int("10.0.1.22")
    udp = Udp(40000, 9999, b"x").build(src, dst)
    inner = Ethernet(vm.mac, "02:00:00:00:99:99", ETH_P_IP, IPv4(src, dst, PROTO_UDP, udp).build())
    datagram = struct.pack("!II", 0x08000000, vni << 8) + inner.build()

    def send_from(prefix: list[str], count: int) -> None:
        done = subprocess.run(
            [*prefix, sys.executable, "-c", SEND_UDP, h2.tunnel_ip, "4789", str(count)],
            input=datagram.hex(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr

    def received_while(send: Callable[[], None]) -> int:
        counter = vm.popen(sys.executable, "-c", UDP_COUNT, "9999", stdout=subprocess.PIPE)
        time.sleep(0.7)
        send()
        return int(counter.communicate(timeout=10)[0].strip() or 0)

    strangers = h2.agent_stats()["datapath"]["tunnel_stranger"]
    # from the underlay's own address (10.99.0.254): no tunnel zone has it
    assert received_while(lambda: send_from(["ip", "netns", "exec", fabric.netns], 5)) == 0
    assert h2.agent_stats()["datapath"]["tunnel_stranger"] >= strangers + 5
    # the same datagram from host 1, a member of the zone, is delivered: the source alone made the difference
    assert received_while(lambda: send_from(h1.prefix, 5)) == 5
