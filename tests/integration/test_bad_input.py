"""Bad input: malformed frames never crash the BPF program or the agent; an upcall storm from one VM does
not starve another VM's established stream."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from kumo.datapath.layout import DEFAULT_UPCALL_BURST
from kumo.testing.cloud import Cloud
from kumo.testing.frames import storm_command
from tests.integration.helpers import wait_ping

FRAMES = ("-m", "kumo.testing.frames")


def test_thousands_of_malformed_frames_leave_the_agent_answering(cloud: Cloud) -> None:
    vm1 = cloud.attach("vm1", "web", "10.0.1.11/24")
    vm2 = cloud.attach("vm2", "web", "10.0.1.12/24")
    assert wait_ping(vm1, "10.0.1.12")
    done = vm1.run(sys.executable, *FRAMES, "fuzz", vm1.mac, vm2.mac, "5000", "7", timeout=120)
    assert done.returncode == 0, done.stderr
    # Mutated ARP frames teach vm2's kernel wrong MACs for vm1's address (as they would on any LAN), and the
    # agent re-injects the first packets of the ring's backlog for a while after the sender is done. Once
    # it is drained, the VMs forget their neighbours: what is checked is that the datapath and agent answer.
    deadline, upcalls = time.monotonic() + 20, -1
    while time.monotonic() < deadline and upcalls != (upcalls := cloud.host.agent_stats()["agent"]["upcalls"]):
        time.sleep(0.5)
    for vm in (vm1, vm2):
        vm.run("ip", "neigh", "flush", "all", check=True)
    assert wait_ping(vm1, "10.0.1.12") and wait_ping(vm2, "10.0.1.11")
    stats = cloud.host.agent_stats()
    assert stats["agent"].get("agent_errors", 0) == 0, stats["agent"]
    assert stats["datapath"]["malformed"] > 0  # the program saw them, counted and dropped them
    assert cloud.host.api is not None and cloud.host.api.proc is not None and cloud.host.api.proc.poll() is None


def test_an_upcall_storm_does_not_stop_an_established_stream(exact_cloud: Cloud) -> None:
    """The stream keeps flowing, every second, while another VM opens new flows as fast as it can; the storming
    interface is held to the storm rate, then given its whole limit back once it has calmed down. (How much
    throughput the stream keeps is a performance figure: bench/datapath_bench.py measures it, "storm".) Exact
    flows only: with megaflows, new 5-tuples on a known path do not reach the agent at all."""
    cloud = exact_cloud
    vm1 = cloud.attach("vm1", "web", "10.0.1.11/24")
    vm2 = cloud.attach("vm2", "web", "10.0.1.12/24")
    storm = cloud.attach("storm", "web", "10.0.1.13/24")
    sink = cloud.attach("sink", "web", "10.0.1.14/24")
    storm_port = cloud.ports["storm"]["id"]
    assert wait_ping(vm1, "10.0.1.12") and wait_ping(storm, "10.0.1.14")
    server = vm2.popen("iperf3", "-s", "-1")
    try:
        time.sleep(0.5)
        # the storming VM's generator runs at the lowest CPU priority: a real VM brings its own vCPUs
        generator = storm_command(storm.mac, sink.mac, "10.0.1.13", "10.0.1.14", 6)
        flood = storm.popen("nice", "-n", "19", *generator, stdout=subprocess.PIPE)
        time.sleep(1.0)
        stream = vm1.popen("iperf3", "-c", "10.0.1.12", "-t", "4", "-i", "1", "-J", stdout=subprocess.PIPE)
        time.sleep(1.0)
        held, held_at = cloud.host.agent_stats(), time.monotonic()
        time.sleep(2.0)
        later, later_at = cloud.host.agent_stats(), time.monotonic()
        shown = cloud.host.kumo("agent", "stats", "--state-dir", str(cloud.host.state_dir)).stdout
        out, _ = stream.communicate(timeout=40)
        sent = int(flood.communicate(timeout=30)[0].strip() or 0)
    finally:
        server.kill()
        server.wait()
    assert stream.returncode == 0, out[-2000:]
    seconds = [i["sum"]["bytes"] for i in json.loads(out)["intervals"]]
    assert sent > 10_000 and later["datapath"]["upcall_rate_limited"] > 0  # a real storm, held back in BPF
    assert len(seconds) >= 4 and min(seconds) > 0, seconds
    # held: its new flows reach the agent at the storm rate (the rest are refused in BPF), not at the limit
    assert list(held["storm_control"]["held"]) == [storm_port], held["storm_control"]
    storm_rate = held["storm_control"]["storm_upcall_rate"]
    assert 0 < storm_rate < held["storm_control"]["upcall_rate"]
    served = later["agent"]["upcalls"] - held["agent"]["upcalls"]
    assert served <= storm_rate * (later_at - held_at) + DEFAULT_UPCALL_BURST, served
    assert later["agent"]["storms_started"] == 1
    assert f"storming: {storm_port}" in shown and f"held to {storm_rate}/s" in shown, shown

    # calm for 5 s: let go, and its whole limit is back: 2,000 new flows/s (to another VM: none of the storm's
    # flows) are all served, twice the storm rate
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and cloud.host.agent_stats()["agent"].get("storms_ended", 0) == 0:
        time.sleep(0.5)
    calm = cloud.host.agent_stats()
    assert calm["agent"].get("storms_ended") == 1 and calm["storm_control"]["held"] == {}
    paced = storm_command(storm.mac, vm2.mac, "10.0.1.13", "10.0.1.12", 10, count=3000, rate=2000)
    assert storm.run(*paced, timeout=30).returncode == 0
    after = cloud.host.agent_stats()
    assert after["agent"]["upcalls"] - calm["agent"]["upcalls"] >= 2700
    assert after["agent"]["storms_started"] == 1
