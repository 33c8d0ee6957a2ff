"""Per-port statistics on one host: for each port bound and attached here, the traffic of its interface, the
packets Kumo dropped that came in through it, and its upcalls. `kumo agent stats` ("ports"), the metrics
(`kumo_port_*`), and the store's `port_stats/<host id>` row, which the API reads (`GET /v1/ports/{id}/stats`,
the picture at /ui).

- Traffic (rx: what the VM sent into the port; tx: what the port delivered to the VM) is the kernel's count
  of the interface, read by netlink when the statistics are taken: every packet, whether the kernel flow or
  the agent forwarded it.
- Dropped: packets from the port that a drop verdict (a firewall rule, port security, no route...) stopped.
  A drop verdict is installed as a kernel flow: its packets are the kernel's count of that flow (read when the
  statistics are taken; added up as the flow goes), plus the packet that made it (the agent dropped it).
  Drops outside any flow verdict (storm control, a full upcall ring) are the agent's counters, per host.
- Upcalls: first packets the agent served for the port.

kumo.agent.publish writes them to the store every few seconds when they changed (owned by the agent's session:
a dead host's row goes)."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute

from kumo.agent.view import HostView
from kumo.datapath.datapath import Datapath
from kumo.datapath.layout import FlowKey
from kumo.simulation.result import SimulationResult, Verdict
from kumo.topology.portstats import FIELDS


@dataclass(eq=False)
class PortStats:
    """The book's observer (packet thread): the drop flows by kernel key, and what removed ones counted."""

    view: HostView
    datapath: Datapath
    drop_flows: dict[bytes, str] = field(default_factory=dict)  # kernel key -> the port its packets came from
    dropped: collections.Counter[str] = field(default_factory=collections.Counter)  # port -> removed flows' drops
    upcalls: collections.Counter[str] = field(default_factory=collections.Counter)  # port -> upcalls served

    def booked(self, raw: bytes, result: SimulationResult, sample: bytes) -> None:
        if result.verdict is not Verdict.DROP:
            return
        port_id = self.view.port_of_ifindex.get(FlowKey.from_buffer_copy(sample or raw).in_port)
        if port_id is not None:
            self.drop_flows[raw] = port_id
            self.dropped[port_id] += 1  # (the packet that made the flow: the agent dropped it)

    def unbooked(self, raw: bytes) -> None:
        port_id = self.drop_flows.pop(raw, None)
        if port_id is None:
            return
        value = self.datapath.lookup(raw)  # (before the kernel entry goes)
        if value is not None:
            self.dropped[port_id] += value.packets

    def copy(self) -> PortStatsCopy:
        """(Under the agent's lock) what `read` needs, so that the kernel and netlink are read without it."""
        return PortStatsCopy(
            dict(self.view.ifindex_of_port),
            dict(self.view.bindings),
            dict(self.drop_flows),
            dict(self.dropped),
            dict(self.upcalls),
        )


@dataclass(frozen=True)
class PortStatsCopy:
    ifindex_of_port: dict[str, int]
    interfaces: dict[str, str]  # port id -> interface name
    drop_flows: dict[bytes, str]
    dropped: dict[str, int]
    upcalls: dict[str, int]


def read(datapath: Datapath, copy: PortStatsCopy) -> dict[str, dict[str, Any]]:
    """port id -> FIELDS (and its "interface"), for the ports attached on this host."""
    links = interface_counters()
    out: dict[str, dict[str, Any]] = {}
    for port_id, ifindex in copy.ifindex_of_port.items():
        row: dict[str, Any] = {"interface": copy.interfaces.get(port_id, ""), **links.get(ifindex, {})}
        for name in FIELDS:
            row.setdefault(name, 0)
        row["dropped"] = copy.dropped.get(port_id, 0)
        row["upcalls"] = copy.upcalls.get(port_id, 0)
        out[port_id] = row
    for raw, port_id in copy.drop_flows.items():
        value = datapath.lookup(raw)
        if value is not None and port_id in out:
            out[port_id]["dropped"] += value.packets
    return out


def interface_counters() -> dict[int, dict[str, int]]:
    """ifindex -> rx/tx packets and bytes of every interface of this network namespace (one netlink dump)."""
    out = {}
    with IPRoute() as ipr:
        for link in ipr.get_links():
            stats = link.get_attr("IFLA_STATS64") or link.get_attr("IFLA_STATS")
            if stats is None:
                continue
            out[int(link["index"])] = {
                "rx_packets": int(stats["rx_packets"]),
                "rx_bytes": int(stats["rx_bytes"]),
                "tx_packets": int(stats["tx_packets"]),
                "tx_bytes": int(stats["tx_bytes"]),
            }
    return out
