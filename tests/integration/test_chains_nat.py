"""Rule chains and NAT through the eBPF datapath: a live connection cut the moment a rule is added, a
stateful firewall, a floating IP and SNAT towards an "external" namespace behind a router uplink."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kumo.testing.cloud import Cloud
from kumo.testing.netns import Vm
from kumo.testing.stream import last_received
from tests.integration.helpers import wait_ping

STREAM = ("-m", "kumo.testing.stream")


@contextmanager
def tcp_stream(server: Vm, client: Vm, address: str, port: int, record: Path) -> Iterator[subprocess.Popen[str]]:
    procs = [server.popen(sys.executable, *STREAM, "server", str(port), str(record))]
    try:
        time.sleep(0.5)
        procs.append(client.popen(sys.executable, *STREAM, "client", address, str(port), stderr=subprocess.PIPE))
        yield procs[1]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_a_drop_rule_cuts_a_running_connection_within_a_second_and_removing_it_restores(
    cloud: Cloud, tmp_path: Path
) -> None:
    vm1 = cloud.attach("vm1", "web", "10.0.1.11/24", gateway="10.0.1.1")
    vm3 = cloud.attach("vm3", "db", "10.0.2.13/24", gateway="10.0.2.1")
    assert wait_ping(vm1, "10.0.2.13")
    record = tmp_path / "received"
    chain = cloud.api.chains.create(name="guard")
    cloud.api.ports.update(cloud.ports["vm3"]["id"], outbound_filter_id=chain["id"])
    with tcp_stream(vm3, vm1, "10.0.2.13", 80, record):
        time.sleep(1.0)
        assert time.time() - last_received(record) < 0.5, "the stream is not flowing"
        cut = time.time()
        rule = cloud.api.rules.create(chain_id=chain["id"], type="drop", nw_proto=6, tp_dst={"start": 80, "end": 80})
        time.sleep(2.0)
        stopped = last_received(record)
        assert stopped - cut < 1.0, f"data still arrived {stopped - cut:.2f} s after the rule was added"
        time.sleep(1.0)
        assert last_received(record) == stopped
        cloud.api.rules.delete(rule["id"])
        deadline = time.monotonic() + 10  # TCP retransmits with backoff: the stream resumes at its next try
        while time.monotonic() < deadline and last_received(record) == stopped:
            time.sleep(0.1)
        assert last_received(record) > stopped, "the stream did not resume after the rule was removed"
    assert vm1.connects("10.0.2.13", 80) is False  # (its server is gone with the stream) a sanity check


def test_match_return_flow_admits_replies_and_drops_new_inbound_connections(cloud: Cloud, tmp_path: Path) -> None:
    vm1 = cloud.attach("vm1", "web", "10.0.1.11/24", gateway="10.0.1.1")
    vm3 = cloud.attach("vm3", "db", "10.0.2.13/24", gateway="10.0.2.1")
    assert wait_ping(vm1, "10.0.2.13")
    chain = cloud.api.chains.create(name="vm1-in")
    cloud.api.rules.create(chain_id=chain["id"], type="accept", match_return_flow=True)
    cloud.api.rules.create(chain_id=chain["id"], type="drop", nw_proto=6)
    cloud.api.ports.update(cloud.ports["vm1"]["id"], outbound_filter_id=chain["id"])
    listeners = [vm.popen(sys.executable, *STREAM, "server", "8080", str(tmp_path / vm.name)) for vm in (vm1, vm3)]
    try:
        time.sleep(0.5)
        assert vm1.connects("10.0.2.13", 8080), "vm1's outbound connection failed"
        assert not vm3.connects("10.0.1.11", 8080), "a new inbound connection reached vm1"
    finally:
        for proc in listeners:
            proc.kill()
            proc.wait()


def add_uplink(cloud: Cloud) -> Vm:
    """An exterior router port (192.0.2.1/24) bound to an "external" namespace at 192.0.2.2 that routes the
    floating range 203.0.113.0/24 to the router, as an upstream router would."""
    ext = cloud.host.vm("ext")
    ext.address("192.0.2.2/24")
    ext.run("ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.1", check=True)
    uplink = cloud.api.ports.create(
        device_id=cloud.ids["rtr"], name="uplink", port_address="192.0.2.1", network_cidr="192.0.2.0/24"
    )
    cloud.api.bind_port(uplink["id"], cloud.host.host_id, ext.interface)
    cloud.ports["uplink"] = uplink
    return ext


def test_floating_ip_and_snat_towards_an_external_namespace(cloud: Cloud, tmp_path: Path) -> None:
    vm1 = cloud.attach("vm1", "web", "10.0.1.11/24", gateway="10.0.1.1")
    vm2 = cloud.attach("vm2", "web", "10.0.1.12/24", gateway="10.0.1.1")
    vm4 = cloud.attach("vm4", "db", "10.0.2.14/24", gateway="10.0.2.1")
    ext = add_uplink(cloud)
    uplink = cloud.ports["uplink"]["id"]
    rtr = cloud.ids["rtr"]
    cloud.api.routes.create(router_id=rtr, dst_cidr="0.0.0.0/0", next_hop_port_id=uplink, next_hop_gateway="192.0.2.2")
    pre, post = cloud.api.chains.create(name="pre"), cloud.api.chains.create(name="post")
    # floating IP 203.0.113.10 <-> vm1 (static 1:1); everyone else leaving by the uplink: SNAT to 192.0.2.1
    fip = [{"address_from": "203.0.113.10", "address_to": "203.0.113.10"}]
    vm1_ip = [{"address_from": "10.0.1.11", "address_to": "10.0.1.11"}]
    cloud.api.rules.create(chain_id=pre["id"], type="dnat", nw_dst="203.0.113.10/32", nat_targets=vm1_ip)
    cloud.api.rules.create(chain_id=pre["id"], type="rev_snat", in_port_ids=[uplink])
    cloud.api.rules.create(
        chain_id=post["id"], type="snat", nw_src="10.0.1.11/32", out_port_ids=[uplink], nat_targets=fip
    )
    cloud.api.rules.create(chain_id=post["id"], type="rev_dnat", out_port_ids=[uplink])
    snat = [{"address_from": "192.0.2.1", "address_to": "192.0.2.1", "port_from": 20000, "port_to": 30000}]
    cloud.api.rules.create(chain_id=post["id"], type="snat", out_port_ids=[uplink], nat_targets=snat)
    cloud.api.routers.update(rtr, inbound_filter_id=pre["id"], outbound_filter_id=post["id"])

    assert wait_ping(ext, "203.0.113.10"), "the floating IP does not answer from outside"
    assert wait_ping(vm2, "192.0.2.2") and wait_ping(vm4, "192.0.2.2") and wait_ping(vm1, "192.0.2.2")
    tcp = ext.popen("tcpdump", "-nli", "eth0", "-c", "40", "icmp", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    vm1.ping("192.0.2.2", count=2)
    vm2.ping("192.0.2.2", count=2)
    vm4.ping("192.0.2.2", count=2)
    time.sleep(0.5)
    tcp.kill()
    seen = tcp.communicate()[0]
    sources = {line.split()[2] for line in seen.splitlines() if "echo request" in line}
    assert sources == {"203.0.113.10", "192.0.2.1"}, seen  # vm1 as its floating IP, vm2 SNATed to the uplink
    snat_requests = [line for line in seen.splitlines() if "echo request" in line and "192.0.2.1 >" in line]
    assert len(snat_requests) >= 4, seen  # vm2 and vm4 (from the other tenant network) share the SNAT address

    # TCP through both translations: addresses, ports and checksums rewritten in the kernel
    servers = [vm.popen(sys.executable, *STREAM, "server", "8080", str(tmp_path / vm.name)) for vm in (ext, vm1)]
    try:
        time.sleep(0.5)
        assert vm2.connects("192.0.2.2", 8080) and vm4.connects("192.0.2.2", 8080), "TCP through SNAT failed"
        assert ext.connects("203.0.113.10", 8080), "TCP to the floating IP failed"
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
