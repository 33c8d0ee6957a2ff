"""Restarting the agent does not cut established connections: kernel flows keep forwarding while it is
down, and the new agent adopts them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from kumo.datapath.layout import MAX_OUT
from kumo.testing.cloud import Cloud
from tests.integration.helpers import (
    BROADCASTS,
    all_received,
    broadcast,
    iperf3_rates,
    received,
    start_iperf3,
    wait_ping,
)


def test_an_iperf3_stream_survives_an_agent_restart(cloud: Cloud) -> None:
    vm1 = cloud.attach("vm1", "web", "10.0.1.11/24", gateway="10.0.1.1")
    vm3 = cloud.attach("vm3", "db", "10.0.2.13/24", gateway="10.0.2.1")
    assert wait_ping(vm1, "10.0.2.13")
    server, client = start_iperf3(vm1, vm3, "10.0.2.13", 8)
    try:
        time.sleep(2.0)
        fresh = bpf_map_fds(cloud)
        cloud.host.stop_kumo()  # SIGTERM: the agent goes away, its flows stay in the kernel
        time.sleep(1.0)
        cloud.host.start_kumo()
        rates = iperf3_rates(server, client, timeout=30)
    finally:
        server.kill()  # (already stopped unless something above failed)
        server.wait()
    assert len(rates) >= 7 and min(rates) > 0, rates  # no second without traffic, restart included
    stats = json.loads(cloud.host.kumo("--json", "agent", "stats", "--state-dir", str(cloud.host.state_dir)).stdout)
    assert stats["agent"].get("adopt_kept", 0) > 0, stats["agent"]
    assert bpf_map_fds(cloud) == fresh  # the earlier program's map fds are closed once taken over
    flows = json.loads(cloud.host.kumo("--json", "flows", "--state-dir", str(cloud.host.state_dir)).stdout)
    adopted = [f for f in flows if f.get("megaflow") is not None and f["age_s"] is not None]
    assert adopted and all("not known" not in " ".join(f["why"]) for f in adopted), flows  # the stream's own


def bpf_map_fds(cloud: Cloud) -> int:
    """The BPF map fds `kumo up` holds."""
    assert cloud.host.api is not None and cloud.host.api.proc is not None
    fds = Path(f"/proc/{cloud.host.api.proc.pid}/fd")
    return sum("bpf-map" in os.readlink(fd) for fd in fds.iterdir())


def test_a_flood_wider_than_one_kernel_value_keeps_flooding_through_a_restart(cloud: Cloud) -> None:
    """The flood's chain of links stays in the kernel while the agent is down; the new agent replaces the
    flow by one naming links of its own and removes the earlier agent's."""
    vms = [cloud.attach(f"v{i}", "web", f"10.0.1.{20 + i}/24") for i in range(MAX_OUT + 3)]
    sender, others = vms[0], vms[1:]
    assert wait_ping(sender, "10.0.1.20") and wait_ping(sender, f"10.0.1.{20 + MAX_OUT + 2}")

    def everyone_gets_a_broadcast() -> None:
        before = {vm.name: received(vm) for vm in others}
        broadcast(sender)
        got = all_received(others, before)
        assert min(got.values()) >= BROADCASTS, got

    everyone_gets_a_broadcast()
    cloud.host.stop_kumo()
    everyone_gets_a_broadcast()  # the kernel alone: the flow and its links
    cloud.host.start_kumo()
    everyone_gets_a_broadcast()
    stats = cloud.host.agent_stats()
    assert stats["agent"].get("adopt_replaced", 0) >= 1, stats["agent"]  # (the flood, naming new links)
    assert stats["datapath"]["flood_link_missing"] == 0
    flows = json.loads(cloud.host.kumo("--json", "flows", "--state-dir", str(cloud.host.state_dir)).stdout)
    floods = [row["actions"][-1] for row in flows if row["match"]["eth_dst"] == "ff:ff:ff:ff:ff:ff"]
    assert floods and all("missing" not in flood and flood.count(",") + 1 == len(others) for flood in floods), floods
