"""Where a result's packets leave this host: the egress ports of a simulation become kernel outputs, a local
interface for a port attached here, or the VXLAN tunnel to the host of a port bound elsewhere (VNI = the
port's tunnel key, remote = that host's tunnel IP in a zone both hosts are members of)."""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field

from kumo.agent.view import HostView
from kumo.datapath.actions import MAX_FLOOD, Out
from kumo.datapath.datapath import Datapath
from kumo.simulation.result import SimulationResult

log = logging.getLogger("kumo.agent")


@dataclass(eq=False)
class Egress:
    host_id: str
    view: HostView
    datapath: Datapath
    counters: collections.Counter[str]
    _warned: set[str] = field(default_factory=set, init=False)  # hosts without a tunnel (and "flood"), warned once

    def outputs(self, result: SimulationResult) -> list[Out]:
        outputs = []
        for port_id in result.egress_port_ids:
            ifindex = self.view.ifindex_of_port.get(port_id)
            out = Out(ifindex) if ifindex is not None else self.tunnel_to(port_id)
            if out is not None:
                outputs.append(out)
        if len(outputs) > MAX_FLOOD:
            self.counters["flood_truncated"] += 1  # the longest chain of kernel values holds MAX_FLOOD outputs
            if "flood" not in self._warned:
                self._warned.add("flood")
                log.warning(
                    "a flood to %d ports: only the first %d get a copy (the kernel's longest chain of flood links)",
                    len(outputs),
                    MAX_FLOOD,
                )
            return outputs[:MAX_FLOOD]
        return outputs

    def tunnel_to(self, port_id: str) -> Out | None:
        """The tunnel to a port bound to another host, or None (counted, and logged once per host)."""
        port = self.view.snapshot.ports.get(port_id)
        host = port.get("host_id") if port is not None else None
        if port is None or not host or not port.get("interface_name"):
            self.counters["egress_unbound"] += 1
            return None
        if host == self.host_id:
            self.counters["egress_not_local"] += 1  # bound here, but its interface is not (yet) there
            return None
        remote = self.view.tunnel_peers.get(host)
        if remote is None or not self.datapath.vxlan_ifindex:
            self.counters["drop.no_tunnel"] += 1
            if host not in self._warned:
                self._warned.add(host)
                log.warning(
                    "no tunnel to host %s (port %s): %s",
                    host,
                    port_id,
                    "the VXLAN device could not be created here"
                    if not self.datapath.vxlan_ifindex
                    else f"put hosts {self.host_id} and {host} in one tunnel zone "
                    "(PUT /v1/tunnel_zones/{id}/members/{host_id})",
                )
            return None
        return Out(self.datapath.vxlan_ifindex, port["tunnel_key"], remote)

    def local_vnis(self) -> dict[int, int]:
        """VNI -> ifindex for the ports attached here: what the VXLAN program delivers without an upcall."""
        out = {}
        for port_id, ifindex in self.view.ifindex_of_port.items():
            port = self.view.snapshot.ports.get(port_id)
            if port is not None and port.get("tunnel_key"):
                out[port["tunnel_key"]] = ifindex
        return out
