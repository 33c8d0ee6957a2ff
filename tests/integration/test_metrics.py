"""Prometheus metrics, scraped by a real Prometheus server: the agent's (`--metrics-listen`) and the API's
(`/metrics`), queried with PromQL after traffic."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kumo.testing.cloud import build_cloud
from kumo.testing.netns import VirtualHost, inside
from kumo.testing.prometheus import PrometheusServer
from tests.integration.helpers import until, wait_ping

METRICS = "127.0.0.1:9481"
NEW_FLOWS = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in range(int(sys.argv[2]), int(sys.argv[2]) + int(sys.argv[3])):
    s.sendto(b"x", (sys.argv[1], port))
"""


@pytest.fixture
def host(tmp_path: Path) -> Iterator[VirtualHost]:
    # exact flows: every new 5-tuple is one upcall, so that the count can be checked
    args = ("--metrics-listen", METRICS, "--max-masks-per-port", "0")
    with VirtualHost(tmp_path, kumo_args=args) as h, inside(h.netns):
        yield h


def value(prometheus: PrometheusServer, promql: str) -> float | None:
    result = prometheus.query(promql)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_agent_and_the_api(host: VirtualHost) -> None:
    cloud = build_cloud(host)
    vm1 = cloud.attach("vm1", "web", "10.0.1.11/24")
    cloud.attach("vm2", "web", "10.0.1.12/24")
    assert wait_ping(vm1, "10.0.1.12")
    with PrometheusServer({"agent": METRICS, "api": "127.0.0.1:8181"}, netns=host.netns) as prometheus:
        assert until(lambda: value(prometheus, 'up{job="agent"}') == 1.0, 15.0)
        assert until(lambda: value(prometheus, 'up{job="api"}') == 1.0, 15.0)
        before = value(prometheus, "kumo_agent_upcalls_total")
        assert before is not None
        vm1.run(sys.executable, "-c", NEW_FLOWS, "10.0.1.12", "20000", "50", check=True)
        assert until(lambda: (value(prometheus, "kumo_agent_upcalls_total") or 0) >= before + 50, 15.0)
        assert (value(prometheus, "kumo_agent_kernel_flows") or 0) >= 50
        requests = 'sum(kumo_api_requests_total{route="/v1/ports",method="POST",status="201"})'
        assert (value(prometheus, requests) or 0) >= 2  # (the cloud's ports, made above)
        assert value(prometheus, "kumo_agent_store_session_up") == 1.0
        # per port, labelled by port id and interface (read every 5 s by the agent)
        port = f'{{port_id="{cloud.ports["vm1"]["id"]}",interface="{vm1.interface}"}}'
        assert until(lambda: (value(prometheus, f"kumo_port_upcalls_total{port}") or 0) >= 50, 20.0)
        assert (value(prometheus, f"kumo_port_rx_packets_total{port}") or 0) >= 50
