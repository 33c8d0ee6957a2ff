"""Packets really flow: bridges, the router, traceroute and ICMP errors through the eBPF datapath."""

from __future__ import annotations

import json
import subprocess
import time

from kumo.datapath.layout import MAX_OUT
from kumo.testing.cloud import Cloud
from tests.integration.helpers import BROADCASTS, all_received, broadcast, received, wait_ping


def test_vms_on_a_bridge_ping_and_learned_macs_stop_the_flooding(cloud: Cloud) -> None:
    vm1 = cloud.attach("vm1", "web", "10.0.1.11/24")
    vm2 = cloud.attach("vm2", "web", "10.0.1.12/24")
    vm3 = cloud.attach("vm3", "web", "10.0.1.13/24")
    assert wait_ping(vm1, "10.0.1.12")
    learned = {row["mac"] for row in cloud.api.mac_table(cloud.ids["web"])}
    assert {vm1.mac, vm2.mac} <= learned

    # once both MACs are learned, vm1 -> vm2 is unicast: vm3 sees no copy of it
    capture = vm3.popen("tcpdump", "-nli", "eth0", "-c", "1", "icmp", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # tcpdump is listening
        assert vm1.ping("10.0.1.12", count=5)
        time.sleep(0.5)
        assert capture.poll() is None, "vm3 captured a packet of the vm1 <-> vm2 conversation"
    finally:
        capture.kill()
        capture.wait()


def test_isolated_bridges_do_not_reach_each_other(host) -> None:  # type: ignore[no-untyped-def]
    from kumo.testing.cloud import build_cloud

    cloud = build_cloud(host, router=False)
    a = cloud.attach("a", "web", "10.0.0.1/24")
    cloud.attach("b", "db", "10.0.0.2/24")
    assert not a.ping("10.0.0.2", count=2)


def test_router_ping_traceroute_and_icmp_errors(cloud: Cloud) -> None:
    vm1 = cloud.attach("vm1", "web", "10.0.1.11/24", gateway="10.0.1.1")
    cloud.attach("vm3", "db", "10.0.2.13/24", gateway="10.0.2.1")
    assert wait_ping(vm1, "10.0.2.13")
    assert vm1.ping("10.0.1.1") and vm1.ping("10.0.2.1")  # the router answers on its port addresses

    trace = vm1.run("traceroute", "-n", "-w", "1", "-q", "1", "-m", "3", "10.0.2.13").stdout
    hops = [line.split()[1] for line in trace.splitlines()[1:] if line.split()]
    assert hops[:2] == ["10.0.1.1", "10.0.2.13"], trace

    ttl1 = vm1.run("ping", "-c", "1", "-W", "1", "-t", "1", "10.0.2.13").stdout
    assert "Time to live exceeded" in ttl1, ttl1

    no_route = vm1.run("ping", "-c", "1", "-W", "1", "192.0.2.99").stdout
    assert "Destination Net Unreachable" in no_route, no_route

    cloud.api.collection("routes").create(router_id=cloud.ids["rtr"], dst_cidr="198.51.100.0/24", type="reject")
    rejected = vm1.run("ping", "-c", "1", "-W", "1", "198.51.100.7").stdout
    assert "Packet filtered" in rejected or "Communication prohibited" in rejected, rejected


def test_a_broadcast_reaches_every_port_of_a_bridge_wider_than_one_kernel_value(cloud: Cloud) -> None:
    """A flood to more ports than one kernel value holds (MAX_OUT) continues in a chain of links: a broadcast
    from one of 21 VMs reaches the other 20, and `kumo flows` lists them all. A port that goes leaves a flood
    without it, and the agent removes the links no flow names any more."""
    vms = [cloud.attach(f"v{i}", "web", f"10.0.1.{20 + i}/24") for i in range(21)]
    sender, others = vms[0], vms[1:]
    assert len(others) > MAX_OUT
    assert wait_ping(sender, "10.0.1.40")
    before = {vm.name: received(vm) for vm in others}
    broadcast(sender)
    got = all_received(others, before)
    assert min(got.values()) >= BROADCASTS, got

    done = cloud.host.kumo("--json", "flows", "--state-dir", str(cloud.host.state_dir))
    floods = [row for row in json.loads(done.stdout) if row["match"]["eth_dst"] == "ff:ff:ff:ff:ff:ff"]
    targets = {t for row in floods for t in row["actions"][-1].removeprefix("flood ").split(",")}
    assert {vm.interface for vm in others} <= targets, floods
    assert not any("missing" in t for t in targets)

    cloud.api.collection("ports").delete(cloud.ports[others[-1].name]["id"])
    stats = cloud.host.agent_stats()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not stats["agent"].get("flood_link_sets_removed"):
        time.sleep(0.5)
        stats = cloud.host.agent_stats()
    assert stats["agent"].get("flood_link_sets_removed", 0) >= 1, stats["agent"]
    remaining = others[:-1]
    before = {vm.name: received(vm) for vm in remaining}
    broadcast(sender)
    got = all_received(remaining, before)
    assert min(got.values()) >= BROADCASTS, got
    assert stats["datapath"]["flood_link_missing"] == 0
    assert not stats["agent"].get("flood_truncated")
