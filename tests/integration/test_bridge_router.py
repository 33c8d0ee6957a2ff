"""Packets really flow: bridges, the router, traceroute and ICMP errors through the eBPF datapath."""

from __future__ import annotations

import subprocess
import time

from kumo.testing.cloud import Cloud
from tests.integration.helpers import wait_ping


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
