"""Restarting the agent does not cut established connections: kernel flows keep forwarding while it is
down, and the new agent adopts them."""

from __future__ import annotations

import json
import time

from kumo.testing.cloud import Cloud
from tests.integration.helpers import iperf3_rates, start_iperf3, wait_ping


def test_an_iperf3_stream_survives_an_agent_restart(cloud: Cloud) -> None:
    vm1 = cloud.attach("vm1", "web", "10.0.1.11/24", gateway="10.0.1.1")
    vm3 = cloud.attach("vm3", "db", "10.0.2.13/24", gateway="10.0.2.1")
    assert wait_ping(vm1, "10.0.2.13")
    server, client = start_iperf3(vm1, vm3, "10.0.2.13", 8)
    try:
        time.sleep(2.0)
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
