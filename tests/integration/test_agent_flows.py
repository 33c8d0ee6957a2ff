"""The agent keeps the kernel's flows right: a change removes exactly the flows that depended on it, idle
flows expire, and interfaces that go and come back are followed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kumo.testing.cloud import Cloud, build_cloud
from kumo.testing.frames import storm_command
from kumo.testing.netns import VirtualHost, inside
from tests.integration.helpers import (
    CONNECT_FROM_PORTS,
    echo_servers,
    server_firewall,
    until,
    wait_ping,
)


def kernel_flows(cloud: Cloud) -> list[dict[str, Any]]:
    done = cloud.host.kumo("--json", "flows", "--state-dir", str(cloud.host.state_dir))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_a_change_removes_exactly_the_flows_that_depended_on_it(cloud: Cloud) -> None:
    web1, web2 = cloud.attach("w1", "web", "10.0.1.11/24"), cloud.attach("w2", "web", "10.0.1.12/24")
    db1, db2 = cloud.attach("d1", "db", "10.0.2.11/24"), cloud.attach("d2", "db", "10.0.2.12/24")
    assert wait_ping(web1, "10.0.1.12") and wait_ping(db1, "10.0.2.12")
    before = kernel_flows(cloud)
    on_web = [f for f in before if f["in_port"] in (web1.interface, web2.interface)]
    on_db = [f for f in before if f["in_port"] in (db1.interface, db2.interface)]
    assert on_web and on_db
    chain = cloud.api.chains.create(name="db-guard")
    cloud.api.ports.update(cloud.ports["d2"]["id"], inbound_filter_id=chain["id"])  # d2 port: db's flows
    time.sleep(0.5)
    after = kernel_flows(cloud)
    kept = {json.dumps(f["match"], sort_keys=True) for f in after}
    assert all(json.dumps(f["match"], sort_keys=True) in kept for f in on_web), "a web flow was removed"
    assert not any(json.dumps(f["match"], sort_keys=True) in kept for f in on_db), "a db flow survived"
    assert wait_ping(db1, "10.0.2.12")  # and db works again, through new flows


def megaflows(cloud: Cloud) -> list[dict[str, Any]]:
    return [f for f in kernel_flows(cloud) if f.get("megaflow") is not None]


def test_new_connections_on_a_known_path_hit_megaflows_until_what_they_read_changes(cloud: Cloud) -> None:
    """Routed TCP: after the first connection, new connections (new source ports) find megaflows in the kernel
    and never reach the agent; a megaflow's match shows only what its simulation read. A rule on the path, a
    route and a MAC entry each remove the megaflows that read them, and new connections work again."""
    vm1 = cloud.attach("vm1", "web", "10.0.1.11/24", gateway="10.0.1.1")
    vm3 = cloud.attach("vm3", "db", "10.0.2.13/24", gateway="10.0.2.1")
    assert wait_ping(vm1, "10.0.2.13")
    with echo_servers(vm3, "8080"):
        vm1.run(sys.executable, "-c", CONNECT_FROM_PORTS, "10.0.2.13", "8080", "30000", "30002", check=True)
        before = cloud.host.agent_stats()
        vm1.run(sys.executable, "-c", CONNECT_FROM_PORTS, "10.0.2.13", "8080", "30002", "30052", check=True)
        after = cloud.host.agent_stats()
        assert after["agent"]["upcalls"] - before["agent"]["upcalls"] <= 2, "new connections went to the agent"
        assert after["datapath"]["megaflow_hit"] - before["datapath"]["megaflow_hit"] >= 150  # 50 x 3+ packets
        shown = megaflows(cloud)
        assert {f["in_port"] for f in shown} >= {vm1.interface, vm3.interface}
        assert all("tp_src" not in f["match"] for f in shown), shown  # (the ports were not read)
        chain = cloud.api.chains.create(name="rtr-in")
        cloud.api.rules.create(chain_id=chain["id"], type="accept", nw_proto=6)
        cloud.api.routers.update(cloud.ids["rtr"], inbound_filter_id=chain["id"])  # a rule on the path
        assert until(lambda: not megaflows(cloud), within=3), megaflows(cloud)
        vm1.run(sys.executable, "-c", CONNECT_FROM_PORTS, "10.0.2.13", "8080", "30052", "30054", check=True)
        assert megaflows(cloud)
        cloud.api.routes.create(
            router_id=cloud.ids["rtr"], dst_cidr="10.0.2.13/32", next_hop_port_id=cloud.ports["rtr-db"]["id"]
        )
        assert until(lambda: not [f for f in megaflows(cloud) if f["in_port"] == vm1.interface], within=3)
        vm1.run(sys.executable, "-c", CONNECT_FROM_PORTS, "10.0.2.13", "8080", "30054", "30056", check=True)
        assert [f for f in megaflows(cloud) if f["in_port"] == vm1.interface]
        # vm3's MAC seen on another port of db (a move, or a spoof): the db bridge's entry for it changes
        vm4 = cloud.attach("vm4", "db", "10.0.2.14/24")
        vm4.run(*storm_command(vm3.mac, "ff:ff:ff:ff:ff:ff", "10.0.2.14", "10.0.2.255", 1, count=1), check=True)
        assert until(lambda: not [f for f in megaflows(cloud) if f["in_port"] == vm1.interface], within=3)


def test_connections_through_a_stateful_firewall_are_tracked_in_the_kernel(cloud: Cloud) -> None:
    """A match_return_flow firewall on the server's port (replies accepted, new connections to 8080 accepted,
    the rest dropped): once the path is known, new connections and their replies are tracked and recognised by
    the kernel (no upcall); a new connection to another port of the server is still refused."""
    vm1 = cloud.attach("vm1", "web", "10.0.1.11/24", gateway="10.0.1.1")
    vm3 = cloud.attach("vm3", "db", "10.0.2.13/24", gateway="10.0.2.1")
    assert wait_ping(vm1, "10.0.2.13")
    server_firewall(cloud.api, cloud.ports["vm3"]["id"], "vm3-in")
    with echo_servers(vm3, "8080", "8081"):
        vm1.run(sys.executable, "-c", CONNECT_FROM_PORTS, "10.0.2.13", "8080", "31000", "31003", check=True)
        before = cloud.host.agent_stats()
        vm1.run(sys.executable, "-c", CONNECT_FROM_PORTS, "10.0.2.13", "8080", "31003", "31053", check=True)
        after = cloud.host.agent_stats()
        assert after["agent"]["upcalls"] - before["agent"]["upcalls"] <= 3, "new connections went to the agent"
        recorded = after["datapath"]["ct_recorded"] - before["datapath"]["ct_recorded"]
        established = after["datapath"]["ct_established"] - before["datapath"]["ct_established"]
        assert recorded >= 50 and established >= 50, after["datapath"]
        assert any("ct_query" in " ".join(f["actions"]) for f in megaflows(cloud))
        assert not vm1.connects("10.0.2.13", 8081), "a new connection to another port went through the firewall"
        assert vm1.connects("10.0.2.13", 8080)


@pytest.fixture
def quick_cloud(tmp_path: Path) -> Iterator[Cloud]:
    with VirtualHost(tmp_path, kumo_args=("--idle-timeout", "1")) as host, inside(host.netns):
        yield build_cloud(host, router=False)


def test_idle_flows_expire(quick_cloud: Cloud) -> None:
    vm1 = quick_cloud.attach("vm1", "web", "10.0.1.11/24")
    quick_cloud.attach("vm2", "web", "10.0.1.12/24")
    assert wait_ping(vm1, "10.0.1.12")
    assert kernel_flows(quick_cloud)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and kernel_flows(quick_cloud):
        time.sleep(0.5)
    assert kernel_flows(quick_cloud) == []
    assert quick_cloud.host.agent_stats()["agent"]["flows_expired"] > 0


SEND_FROM_PORTS = """
import socket, sys
for port in range(int(sys.argv[1]), int(sys.argv[2])):  # one new flow each, in this order
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    s.sendto(b"x", ("10.0.1.12", 9)); s.close()
"""


def test_beyond_the_maximum_the_oldest_flows_go(tmp_path: Path) -> None:
    # (exact flows only, so that each new 5-tuple is a flow of its own)
    with (
        VirtualHost(tmp_path, kumo_args=("--max-flows", "20", "--max-masks-per-port", "0")) as host,
        inside(host.netns),
    ):
        cloud = build_cloud(host, router=False)
        vm1, _ = cloud.attach("vm1", "web", "10.0.1.11/24"), cloud.attach("vm2", "web", "10.0.1.12/24")
        assert wait_ping(vm1, "10.0.1.12")
        vm1.run(sys.executable, "-c", SEND_FROM_PORTS, "20000", "20060", check=True)
        assert until(lambda: len(kernel_flows(cloud)) <= 20, within=5), len(kernel_flows(cloud))
        kept = {f["match"].get("tp_src") for f in kernel_flows(cloud)}
        assert set(range(20050, 20060)) <= kept, kept  # the newest stay
        assert not kept & set(range(20000, 20040))
        assert host.agent_stats()["agent"]["flows_evicted"] >= 40


UDP_COUNTER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 9)); s.settimeout(float(sys.argv[1]))
print("ready", flush=True)
got = set()
try:
    while True:
        got.add(s.recvfrom(64)[1][1])
except socket.timeout:
    pass
print(min(got, default=0), max(got, default=0), len(got))
"""


def test_new_flows_like_known_ones_are_found_by_their_kernel_key_and_follow_a_new_rule(exact_cloud: Cloud) -> None:
    """The first packet of each new UDP flow is served from the kernel-key index (no parse, no simulation)
    once one like it was simulated; a drop rule added afterwards applies to the very next new flow. (Exact
    flows only: with megaflows such flows never reach the agent; the index serves the exact-flow path.)"""
    cloud = exact_cloud
    vm1, vm2 = cloud.attach("vm1", "web", "10.0.1.11/24"), cloud.attach("vm2", "web", "10.0.1.12/24")
    assert wait_ping(vm1, "10.0.1.12")

    def send_from(first: int, last: int) -> tuple[int, int, int]:
        counter = vm2.popen(sys.executable, "-c", UDP_COUNTER, "1.5", stdout=subprocess.PIPE)
        assert counter.stdout is not None
        counter.stdout.readline()  # "ready"
        vm1.run(sys.executable, "-c", SEND_FROM_PORTS, str(first), str(last), check=True)
        out, _ = counter.communicate(timeout=10)
        low, high, count = (int(v) for v in out.split())
        return low, high, count

    before = cloud.host.agent_stats()["agent"]
    assert send_from(21000, 21030) == (21000, 21029, 30)
    after = cloud.host.agent_stats()["agent"]
    assert after.get("key_index_hits", 0) - before.get("key_index_hits", 0) >= 25, after
    assert after["simulations"] - before["simulations"] <= 5, after  # (ARP, the first of its kind)

    chain = cloud.api.chains.create(name="no-udp-9")
    cloud.api.rules.create(chain_id=chain["id"], type="drop", nw_proto=17, tp_dst={"start": 9, "end": 9})
    cloud.api.ports.update(cloud.ports["vm1"]["id"], inbound_filter_id=chain["id"])
    time.sleep(0.5)
    assert send_from(21100, 21110)[2] == 0  # every new flow dropped: none served from the old results
    cloud.api.ports.update(cloud.ports["vm1"]["id"], inbound_filter_id=None)
    time.sleep(0.5)
    assert send_from(21200, 21210) == (21200, 21209, 10)


def test_an_interface_that_goes_and_comes_back_is_followed(cloud: Cloud) -> None:
    vm1, vm2 = cloud.attach("vm1", "web", "10.0.1.11/24"), cloud.attach("vm2", "web", "10.0.1.12/24")
    assert wait_ping(vm1, "10.0.1.12")
    cloud.host.unplug(vm2)
    time.sleep(1.5)
    assert not any(f["in_port"] == vm2.interface for f in kernel_flows(cloud))
    cloud.host.plug(vm2)
    vm2.address("10.0.1.12/24")
    assert wait_ping(vm1, "10.0.1.12", within=10)
    assert cloud.host.agent_stats()["agent"]["interfaces_lost"] >= 1
