"""The agent's Prometheus metrics (`kumo agent --metrics-listen ADDR:PORT`, docs/metrics.md).

A collector reads what `kumo agent stats` shows, once per scrape, and names it for Prometheus, so that every
counter there is a metric and none is counted twice:
- each agent counter `x` is `kumo_agent_x_total`; `drop.<reason>` is `kumo_agent_drops_total{reason}`;
- each datapath counter `x` is `kumo_datapath_x_total`;
- sizes are gauges (`kumo_agent_kernel_flows`, ...), megaflow masks are counted per mask slot, held (storming)
  interfaces are labelled by port id (at most the ports of this host), so are the per-port counters
  (kumo.agent.portstats, read every few seconds, not at the scrape), BGP sessions by peer and pool members
  by member (both bounded by the configuration: no label ever names a flow);
- the upcall -> re-injection time and the invalidation time are histograms the agent observes as they happen
  (Timings).
A scrape takes the agent's lock for the stats' copy only (what `kumo agent stats` costs)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kumo.topology.errors import InvalidInput

disable_created_metrics()  # (no `_created` series: the exposition says what the docs say)

BGP_STATES = ("idle", "connect", "active", "opensent", "openconfirm", "established")
GAUGES = {  # stats key -> (metric, help)
    "uptime_s": ("kumo_agent_uptime_seconds", "Seconds since the agent started."),
    "ports_bound": ("kumo_agent_ports_bound", "Ports the topology binds to this host."),
    "ports_attached": ("kumo_agent_ports_attached", "Bound ports whose interface the datapath is attached to."),
    "kernel_flows": ("kumo_agent_kernel_flows", "Flows installed in the kernel (exact and megaflows)."),
    "wildcard_flows": ("kumo_agent_wildcard_flows", "Results in the agent's wildcard table."),
    "arp_answers": ("kumo_agent_arp_answers", "Addresses the kernel answers ARP for."),
    "key_index_entries": ("kumo_agent_key_index_entries", "Results found again by kernel key."),
    "parked": ("kumo_agent_parked_packets", "Packets waiting for ARP resolution."),
    "upcall_ring_most_waiting_kb": ("kumo_agent_upcall_ring_most_waiting_kilobytes", "Most upcall data waiting."),
}


def metric_name(counter: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", counter)


class Timings:
    """Histograms the agent observes directly (they are not in `kumo agent stats`, which keeps percentiles)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.upcall = Histogram(
            "kumo_agent_upcall_to_reinject_seconds",
            "A first packet's time in the agent: the kernel queued its upcall -> it was re-injected.",
            buckets=(5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2, 0.1),
            registry=registry,
        )
        self.invalidation = Histogram(
            "kumo_agent_invalidation_seconds",
            "A store change's notification -> the flows depending on it removed.",
            buckets=(1e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 5.0),
            registry=registry,
        )


PORT_COUNTERS = {  # kumo.agent.portstats field -> (metric, help)
    "rx_packets": ("kumo_port_rx_packets", "Packets the port received from what is plugged in (its interface)."),
    "rx_bytes": ("kumo_port_rx_bytes", "Bytes the port received from what is plugged in (its interface)."),
    "tx_packets": ("kumo_port_tx_packets", "Packets the port delivered to what is plugged in (its interface)."),
    "tx_bytes": ("kumo_port_tx_bytes", "Bytes the port delivered to what is plugged in (its interface)."),
    "dropped": ("kumo_port_dropped_packets", "Packets from the port that a drop verdict stopped."),
    "upcalls": ("kumo_port_upcalls", "First packets from the port the agent served."),
}


TUNNEL_COUNTERS = {  # kumo agent stats' tunnel_peers field -> (metric, help)
    "tx_packets": ("kumo_tunnel_tx_packets", "Packets tunnelled to a peer host by the kernel."),
    "tx_bytes": ("kumo_tunnel_tx_bytes", "Inner-frame bytes tunnelled to a peer host by the kernel."),
    "rx_packets": ("kumo_tunnel_rx_packets", "Packets tunnelled from a peer host, past the source filter."),
    "rx_bytes": ("kumo_tunnel_rx_bytes", "Inner-frame bytes tunnelled from a peer host, past the source filter."),
}


class AgentCollector(Collector):
    def __init__(self, stats: Callable[[], dict[str, Any]], session_up: Callable[[], bool]) -> None:
        self.stats = stats
        self.session_up = session_up

    def describe(self) -> list[Metric]:
        return []  # (the metrics follow the stats: read at scrape time, never at registration)

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        host = GaugeMetricFamily("kumo_agent_info", "This agent: its host id.", labels=["host_id"])
        host.add_metric([str(stats.get("host_id", ""))], 1)
        yield host
        session = GaugeMetricFamily("kumo_agent_store_session_up", "1 while the agent holds a store session.")
        session.add_metric([], 1 if self.session_up() else 0)
        yield session
        for key, (name, text) in GAUGES.items():
            if key in stats:
                yield GaugeMetricFamily(name, text, value=float(stats[key]))
        yield from self._counters(stats.get("agent", {}))
        for counter, value in sorted(stats.get("datapath", {}).items()):
            name = f"kumo_datapath_{metric_name(counter)}"
            yield CounterMetricFamily(name, f"Datapath counter {counter} (docs/counters.md).", value=value)
        yield from self._masks(stats.get("megaflow_masks", []))
        yield from self._storms(stats.get("storm_control", {}))
        yield from self._bgp(stats.get("bgp_peers", {}))
        yield from self._members(stats.get("health_checks", {}))
        yield from _per_object(stats.get("tunnel_peers", {}), TUNNEL_COUNTERS, ("peer_host", "peer_address"), "address")
        yield from _per_object(stats.get("ports", {}), PORT_COUNTERS, ("port_id", "interface"), "interface")

    @staticmethod
    def _counters(counters: dict[str, int]) -> Iterator[Metric]:
        drops = CounterMetricFamily("kumo_agent_drops", "Packets the agent dropped, by reason.", labels=["reason"])
        for counter, value in sorted(counters.items()):
            if counter.startswith("drop."):
                drops.add_metric([counter.removeprefix("drop.")], value)
            else:
                name = f"kumo_agent_{metric_name(counter)}"
                yield CounterMetricFamily(name, f"Agent counter {counter} (docs/counters.md).", value=value)
        yield drops

    @staticmethod
    def _masks(masks: list[dict[str, Any]]) -> Iterator[Metric]:
        count = GaugeMetricFamily("kumo_agent_megaflow_masks", "Megaflow masks in use.", value=len(masks))
        flows = GaugeMetricFamily("kumo_agent_megaflows", "Megaflows per mask slot.", labels=["mask"])
        for mask in masks:
            flows.add_metric([str(mask["id"])], mask["megaflows"])
        yield count
        yield flows

    @staticmethod
    def _storms(storms: dict[str, Any]) -> Iterator[Metric]:
        text = "1 for a port storm control holds (its VM offers too many new flows)."
        held = GaugeMetricFamily("kumo_agent_port_held", text, labels=["port_id", "interface"])
        for port_id, state in sorted(storms.get("held", {}).items()):
            held.add_metric([port_id, str(state.get("interface", ""))], 1)
        yield held

    @staticmethod
    def _bgp(peers: dict[str, Any]) -> Iterator[Metric]:
        peer = ["peer_id"]
        state = GaugeMetricFamily("kumo_bgp_session_state", "1 for a session's state.", labels=[*peer, "state"])
        prefixes = GaugeMetricFamily("kumo_bgp_prefixes_received", "Prefixes a peer announced.", labels=peer)
        flaps = CounterMetricFamily("kumo_bgp_session_flaps", "Established sessions that went down.", labels=peer)
        for peer_id, session in sorted(peers.items()):
            for name in BGP_STATES:
                state.add_metric([peer_id, name], 1 if session.get("state") == name else 0)
            prefixes.add_metric([peer_id], session.get("prefixes_received", 0))
            flaps.add_metric([peer_id], session.get("flaps", 0))
        yield from (state, prefixes, flaps)

    @staticmethod
    def _members(health: dict[str, Any]) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "kumo_lb_member_up", "1 if a pool member this host checks is up, 0 if down.", labels=["member_id"]
        )
        for member_id, member in sorted(health.get("members", {}).items()):
            up.add_metric([member_id], 1 if member.get("status") == "up" else 0)
        yield up


def _per_object(
    rows: dict[str, dict[str, Any]], families: dict[str, tuple[str, str]], labels: tuple[str, str], second: str
) -> Iterator[Metric]:
    """One counter family per field of `families`, a sample per row: labelled by the row's key and its `second`
    field (a port id and its interface; a peer host and its address)."""
    for field, (name, text) in families.items():
        family = CounterMetricFamily(name, text, labels=list(labels))
        for key, row in sorted(rows.items()):
            family.add_metric([key, str(row.get(second, ""))], row.get(field, 0))
        yield family


def serve_metrics(listen: str, registry: CollectorRegistry) -> Any:
    """Serve `registry` on http://ADDRESS:PORT/metrics from a thread; the server (shutdown() stops it)."""
    address, _, port = listen.rpartition(":")
    if not address or not port.isdigit():
        raise InvalidInput(f"--metrics-listen {listen!r}: use ADDRESS:PORT, for example 127.0.0.1:9481")
    server, _ = start_http_server(int(port), addr=address.strip("[]"), registry=registry)
    return server
