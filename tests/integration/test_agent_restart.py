"""Restarting the agent does not cut established connections: kernel flows keep forwarding while it is
down, and the new agent adopts them."""

from __future__ import annotations

import json
import time

from kumo.testing.cloud import Cloud
from tests.integration.test_bridge_router import wait_ping


def test_an_iperf3_stream_survives_an_agent_restart(cloud: Cloud) -> None:
    vm1 = cloud.attach("vm1", "web", "10.0.1.11/24", gateway="10.0.1.1")
    vm3 = cloud.attach("vm3", "db", "10.0.2.13/24", gateway="10.0.2.1")
    assert wait_ping(vm1, "10.0.2.13")
    server = vm3.popen("iperf3", "-s", "-1")
    try:
        time.sleep(0.5)
        client = vm1.popen("iperf3", "-c", "10.0.2.13", "-t", "8", "-i", "1", "-J", stdout=-1, stderr=-1)
        time.sleep(2.0)
        cloud.host.stop_kumo()  # SIGTERM: the agent goes away, its flows stay in the kernel
        time.sleep(1.0)
        cloud.host.start_kumo()
        out, err = client.communicate(timeout=30)
    finally:
        server.kill()
        server.wait()
    assert client.returncode == 0, err
    report = json.loads(out)
    rates = [interval["sum"]["bits_per_second"] for interval in report["intervals"]]
    assert len(rates) >= 7 and min(rates) > 0, rates  # no second without traffic, restart included
    stats = json.loads(cloud.host.kumo("--json", "agent", "stats", "--state-dir", str(cloud.host.state_dir)).stdout)
    assert stats["agent"].get("adopt_kept", 0) > 0, stats["agent"]
