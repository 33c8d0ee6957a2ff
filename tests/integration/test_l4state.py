"""Stateful across hosts (the l4state story): three hosts sharing flow state through a real Redis, and
return traffic that comes back through the other uplink than the one its flow left by (the topology:
kumo.testing.edge)."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from kumo.testing.edge import FIP, SNAT_IP, Edge, build_edge
from kumo.testing.fabric import Fabric, FabricHost
from kumo.testing.netns import inside
from kumo.testing.stream import longest_silence
from tests.integration.helpers import describe, iperf3, iperf3_rates, start_iperf3, until

STREAM = ["-m", "kumo.testing.stream"]

SNAT_FLOWS = """
import socket, sys, time
host, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
socks = []
for i in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 0)); socks.append(s)
for _ in range(2):  # twice: a first packet the upcall limiter dropped still leaves one
    for i, s in enumerate(socks):
        s.sendto(f"{tag}:{i}".encode(), (host, 7000))
        if i % 50 == 49:
            time.sleep(0.1)  # ~500 new flows/s: under the agent's per-port upcall limit
"""

SNAT_SINK = """
import json, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 7000)); s.settimeout(5)
seen = {}
try:
    while True:
        data, (src, sport) = s.recvfrom(64)
        seen.setdefault(f"{src}:{sport}", set()).add(data.decode())
except OSError:
    pass
print(json.dumps({k: sorted(v) for k, v in seen.items()}))
"""


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    with Fabric(tmp_path_factory.mktemp("l4state"), hosts=3, redis=True) as fabric, inside(fabric.netns):
        yield build_edge(fabric)


def agent_counter(host: FabricHost, name: str) -> int:
    return int(host.agent_stats()["agent"].get(name, 0))


def test_return_traffic_through_the_other_uplink_is_recognised_and_translated(edge: Edge) -> None:
    h1, h2, h3 = edge.fabric.hosts
    vm1, ext = edge.vm1, edge.ext
    # SNAT: vm1 -> 203.0.113.1 leaves through A (host 2); the replies to 198.18.0.50 come back through B (host 3)
    assert min(iperf3(vm1, ext, "203.0.113.1", 2)) > 0  # data out via A, ACKs back via B
    assert min(iperf3(vm1, ext, "203.0.113.1", 2, "-R")) > 0  # data in via B, ACKs out via A
    # DNAT (floating IP): ext -> 198.18.0.10 enters through A (host 2); vm1's replies leave through B (host 3)
    assert min(iperf3(ext, vm1, FIP, 2, "-B", "203.0.113.2", "-p", "8080")) > 0
    assert min(iperf3(ext, vm1, FIP, 2, "-B", "203.0.113.2", "-p", "8080", "-R")) > 0
    # it was asymmetric, and the state reached the hosts of the return path before the traffic did
    assert agent_counter(h3, "state_received") > 0 and agent_counter(h1, "state_received") > 0
    # the firewall on vm1's port still drops what is not a reply nor a service
    assert ext.run(sys.executable, "-c", CONNECT.format(FIP, 9090, "203.0.113.2"), timeout=10).returncode != 0
    assert h2.agent_stats()["agent"].get("agent_errors", 0) == 0


CONNECT = "import socket; s = socket.socket(); s.bind(({2!r}, 0)); s.settimeout(2); s.connect(({0!r}, {1}))"


def test_nat_connections_survive_a_restart_of_the_vms_host_agent(edge: Edge) -> None:
    h1 = edge.fabric.hosts[0]
    vm1, ext = edge.vm1, edge.ext
    srv, cli = start_iperf3(vm1, ext, "203.0.113.1", 8)
    try:
        time.sleep(2.0)
        h1.stop_agent()
        time.sleep(1.0)
        h1.start_agent()
        rates = iperf3_rates(srv, cli, timeout=40)
    finally:
        srv.kill()  # (already stopped unless something above failed)
        srv.wait()
    assert len(rates) >= 7 and min(rates) > 0, rates
    stats = h1.agent_stats()["agent"]
    assert stats.get("flow_state_redis_hits", 0) > 0, stats  # the SNAT binding came back from Redis
    assert stats.get("adopt_kept", 0) > 0, stats


def test_two_hosts_snat_a_thousand_flows_each_without_a_collision(edge: Edge) -> None:
    h1, h2, _ = edge.fabric.hosts
    other = h2.vm("vm2")
    edge.extra.append((other, h2))
    other.address("10.0.1.12/24", "10.0.1.1")
    port = edge.api.collection("ports").create(device_id=edge.ids["bridge"], name="vm2")
    edge.api.bind_port(port["id"], h2.host_id, other.interface)
    assert until(lambda: other.ping("203.0.113.1", wait=0.5), 10.0)
    sink = edge.ext.popen(sys.executable, "-c", SNAT_SINK, stdout=subprocess.PIPE)
    time.sleep(0.5)
    senders = [vm.popen(sys.executable, "-c", SNAT_FLOWS, "203.0.113.1", vm.name, "1000") for vm in (edge.vm1, other)]
    for proc in senders:
        proc.wait(timeout=60)
    seen: dict[str, list[str]] = json.loads(sink.communicate(timeout=60)[0])
    collisions = {source: flows for source, flows in seen.items() if len(flows) > 1}
    assert not collisions, list(collisions.items())[:5]
    flows = [f for flows in seen.values() for f in flows]
    per_vm = collections.Counter(f.split(":")[0] for f in flows)
    assert per_vm == {"vm1": 1000, "vm2": 1000}, (per_vm, describe(edge.fabric))
    assert {s.split(":")[0] for s in seen} == {SNAT_IP}
    assert agent_counter(h1, "snat_blocks_leased") > 0 and agent_counter(h2, "snat_blocks_leased") > 0


def test_redis_down_keeps_established_flows_fails_new_stateful_ones_closed_and_recovers(edge: Edge) -> None:
    h1 = edge.fabric.hosts[0]
    vm1, ext = edge.vm1, edge.ext
    redis = edge.fabric.redis
    assert redis is not None
    srv, cli = start_iperf3(vm1, ext, "203.0.113.1", 6)
    try:
        time.sleep(1.5)
        redis.stop()
        failed_before = agent_counter(h1, "drop.flow_state_unavailable")
        # a new stateful flow (SNAT + conntrack) while Redis is down: not forwarded, counted
        assert not vm1.ping("203.0.113.1", wait=0.5)
        assert agent_counter(h1, "drop.flow_state_unavailable") > failed_before
        rates = iperf3_rates(srv, cli, timeout=40)
    finally:
        srv.kill()  # (already stopped unless an assertion above failed)
        srv.wait()
        redis.start()
    assert len(rates) >= 5 and min(rates) > 0, rates  # established kernel flows never stopped
    assert until(lambda: vm1.ping("203.0.113.1", wait=0.5), 10.0), "new flows work again once Redis is back"


def test_a_migrated_vm_keeps_its_snat_and_dnat_udp_flows(edge: Edge) -> None:
    h1, _, h3 = edge.fabric.hosts
    vm1, ext = edge.vm1, edge.ext
    echo_ext = ext.popen(sys.executable, *STREAM, "udp-echo", "5000", "203.0.113.1")
    echo_vm = vm1.popen(sys.executable, *STREAM, "udp-echo", "5001")
    try:
        time.sleep(0.5)
        snat = vm1.popen(sys.executable, *STREAM, "udp-probe", "203.0.113.1", "5000", "8", stdout=subprocess.PIPE)
        dnat = ext.popen(sys.executable, *STREAM, "udp-probe", FIP, "5001", "8", "203.0.113.2", stdout=subprocess.PIPE)
        time.sleep(2.0)
        # vm1 moves to host 3: same namespace, MAC and address; its port is rebound there
        h1.unplug(vm1)
        h1.vms.remove(vm1)
        h3.plug(vm1)
        h3.vms.append(vm1)
        vm1.address("10.0.1.11/24", "10.0.1.1")
        edge.api.bind_port(edge.ids["vm_port"], h3.host_id, vm1.interface)
        moved = time.monotonic()
        results = [json.loads(p.communicate(timeout=30)[0]) for p in (snat, dnat)]
    finally:
        for proc in (echo_ext, echo_vm):
            proc.kill()
            proc.wait()
    for result in results:
        answers = result["answers"]
        assert answers and answers[-1] > 7.0, result  # answered again after the move, to the end
        assert longest_silence(answers, 8.0) < 4.0, result
    assert time.monotonic() - moved < 30


ECHO_SOURCES = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2]))); s.settimeout(0.5)
sources, end = set(), time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    try:
        data, source = s.recvfrom(64)
    except OSError:
        continue
    sources.add(f"{source[0]}:{source[1]}")
    s.sendto(data, source)
print(json.dumps(sorted(sources)))
"""


def test_a_fresh_agent_finds_a_flows_snat_binding_in_redis_within_the_round(edge: Edge) -> None:
    """The VM host's agent restarts with an empty datapath (no flows to adopt): the flow's next packet is
    simulated afresh, misses the (empty) local tables, and its provisional result, which allocated a new SNAT
    port, is undone once the round's batched Redis lookup finds the flow's binding; the packet is served again
    with it, so the flow keeps its translated source."""
    vm1, ext = edge.vm1, edge.ext
    h1 = next(host for host in edge.fabric.hosts if vm1 in host.vms)  # (an earlier test may have moved it)
    sink = ext.popen(sys.executable, "-c", ECHO_SOURCES, "203.0.113.1", "5002", "12", stdout=subprocess.PIPE)
    try:
        time.sleep(0.5)
        probe = vm1.popen(sys.executable, *STREAM, "udp-probe", "203.0.113.1", "5002", "9", stdout=subprocess.PIPE)
        time.sleep(2.0)
        h1.stop_agent()
        # the earlier datapath is not adopted: its flows stay on the VM's interface until the agent attaches anew
        subprocess.run([*h1.prefix, "tc", "filter", "del", "dev", "kumo-inj1", "ingress"], check=True)
        h1.start_agent()
        answers = json.loads(probe.communicate(timeout=30)[0])["answers"]
        sources = json.loads(sink.communicate(timeout=30)[0])
    finally:
        sink.kill()
        sink.wait()
    stats = h1.agent_stats()["agent"]
    assert stats.get("adopt_kept", 0) == 0, stats  # (nothing adopted: the flow was simulated again)
    assert stats.get("provisional_results_redone", 0) >= 1, stats
    assert stats.get("flow_state_redis_hits", 0) >= 1, stats
    assert len(sources) == 1 and sources[0].startswith(f"{SNAT_IP}:"), sources  # one binding, before and after
    assert answers and answers[-1] > 8.0, answers  # answered again after the restart, to the end
