"""The metrics' exposition: what the agent's collector makes of `kumo agent stats`, and the API's request
metrics; both accepted by the real `promtool check metrics`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kumo.agent.metrics import AgentCollector, Timings, metric_name
from kumo.api import create_app
from kumo.topology.store.sqlite import SqliteStore

STATS: dict[str, Any] = {
    "host_id": "host-1",
    "uptime_s": 12.5,
    "ports_bound": 3,
    "ports_attached": 2,
    "kernel_flows": 100,
    "wildcard_flows": 40,
    "parked": 0,
    "megaflow_masks": [{"id": 3, "fields": ["in_port"], "megaflows": 7, "hits": 9, "recent_hits": 1}],
    "storm_control": {
        "upcall_rate": 5000,
        "storm_upcall_rate": 1000,
        "held": {"port-a": {"offered_per_s": 9000, "interface": "tap-a"}},
    },
    "bgp_peers": {"peer-1": {"state": "established", "prefixes_received": 4, "flaps": 1}},
    "health_checks": {"checking_routers": ["r1"], "members": {"m1": {"status": "down", "detail": "x"}}},
    "agent": {"upcalls": 10, "simulations": 8, "drop.chain_drop": 2, "drop.port_security_ip": 1},
    "datapath": {"rx": 100, "hit": 90, "upcall": 10},
    "tunnel_peers": {
        "host-2": {"address": "10.99.0.2", "tx_packets": 5, "tx_bytes": 500, "rx_packets": 4, "rx_bytes": 400}
    },
}
PORTS = {
    "port-a": {
        "interface": "tap-a",
        **dict.fromkeys(("rx_packets", "rx_bytes", "tx_bytes"), 1),
        "tx_packets": 2,
        "dropped": 3,
        "upcalls": 4,
    }
}


def promtool_accepts(text: bytes, tmp_path: Path) -> None:
    done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_every_agent_counter_is_a_metric_and_promtool_accepts_them(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    timings = Timings(registry)
    registry.register(AgentCollector(lambda: {**STATS, "ports": PORTS}, lambda: True))
    timings.upcall.observe(0.0002)
    text = generate_latest(registry)
    found = samples(text)
    assert found[("kumo_agent_upcalls_total", ())] == 10
    assert found[("kumo_agent_drops_total", (("reason", "chain_drop"),))] == 2
    assert found[("kumo_agent_drops_total", (("reason", "port_security_ip"),))] == 1
    assert found[("kumo_datapath_hit_total", ())] == 90
    assert found[("kumo_agent_kernel_flows", ())] == 100
    assert found[("kumo_agent_store_session_up", ())] == 1
    assert found[("kumo_agent_port_held", (("interface", "tap-a"), ("port_id", "port-a")))] == 1
    assert found[("kumo_bgp_session_state", (("peer_id", "peer-1"), ("state", "established")))] == 1
    assert found[("kumo_bgp_session_state", (("peer_id", "peer-1"), ("state", "idle")))] == 0
    assert found[("kumo_lb_member_up", (("member_id", "m1"),))] == 0
    assert found[("kumo_agent_upcall_to_reinject_seconds_count", ())] == 1
    tunnel = (("peer_address", "10.99.0.2"), ("peer_host", "host-2"))
    assert found[("kumo_tunnel_tx_packets_total", tunnel)] == 5 and found[("kumo_tunnel_rx_bytes_total", tunnel)] == 400
    port = (("interface", "tap-a"), ("port_id", "port-a"))
    assert found[("kumo_port_dropped_packets_total", port)] == 3 and found[("kumo_port_upcalls_total", port)] == 4
    assert found[("kumo_port_tx_packets_total", port)] == 2
    promtool_accepts(text, tmp_path)


def test_the_api_counts_requests_by_route_template_and_status(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "kumo.db")
    try:
        with TestClient(create_app(store)) as api:
            bridge = api.post("/v1/bridges", json={}).json()
            api.get(f"/v1/bridges/{bridge['id']}")
            api.get("/v1/bridges/nope")
            text = api.get("/metrics").content
    finally:
        store.close()
    found = samples(text)
    assert found[("kumo_api_requests_total", (("method", "POST"), ("route", "/v1/bridges"), ("status", "201")))] == 1
    one = (("method", "GET"), ("route", "/v1/bridges/{id}"))
    assert found[("kumo_api_requests_total", (*one, ("status", "200")))] == 1
    assert found[("kumo_api_requests_total", (*one, ("status", "404")))] == 1
    assert not any(bridge["id"] in str(key) for key in found)  # (no label names an object)
    promtool_accepts(text, tmp_path)


DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_the_example_alert_rules_and_dashboard_are_valid() -> None:
    done = subprocess.run(
        ["promtool", "check", "rules", str(DOCS / "prometheus-alerts.yml")], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs and all("kumo_" in e for e in exprs)


def test_every_metric_is_documented() -> None:
    """Each metric family is named in docs/metrics.md, but the one-per-counter families, which follow its rule
    (`kumo_agent_<counter>_total`, `kumo_datapath_<counter>_total`: the counters are in docs/counters.md)."""
    documented = (DOCS / "metrics.md").read_text()
    registry = CollectorRegistry()
    Timings(registry)
    registry.register(AgentCollector(lambda: STATS, lambda: True))
    names = {family.name for family in text_string_to_metric_families(generate_latest(registry).decode())}
    names |= {"kumo_api_requests", "kumo_api_request_seconds"}
    per_counter = {f"kumo_agent_{metric_name(c)}" for c in STATS["agent"] if not c.startswith("drop.")}
    per_counter |= {f"kumo_datapath_{metric_name(c)}" for c in STATS["datapath"]}
    assert {n for n in names - per_counter if f"`{n}" not in documented} == set()
