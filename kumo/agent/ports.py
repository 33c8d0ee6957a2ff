"""The ports bound to this host and their interfaces: a binding is followed as soon as the topology says so,
its interface attached (the BPF program on its TC ingress, its VNI delivered straight to it) when it exists,
and detached, with every flow entering through it, when the binding or the interface goes. Binding ahead of
the interface is fine (API.md): the packet thread looks for missing interfaces once a second."""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass

from kumo.agent.kernelflows import KernelFlows
from kumo.agent.view import HostView
from kumo.datapath.datapath import Datapath

log = logging.getLogger("kumo.agent")


@dataclass(eq=False)
class PortFollower:
    host_id: str
    view: HostView
    datapath: Datapath
    flows: KernelFlows
    counters: collections.Counter[str]

    def follow_bindings(self) -> None:
        """Bind and unbind to match the current snapshot's ports bound to this host."""
        view = self.view
        bound = {
            p["id"]: p["interface_name"]
            for p in view.snapshot.ports.values()
            if p.get("host_id") == self.host_id and p.get("interface_name")
        }
        for port_id, interface in list(view.bindings.items()):
            if bound.get(port_id) != interface:
                self._unbind(port_id, interface)
        for port_id, interface in bound.items():
            if port_id not in view.bindings:
                view.bindings[port_id] = interface
                self._try_attach(port_id)

    def follow_interfaces(self) -> None:
        """Attach the interfaces that appeared; forget those gone or replaced (with their flows)."""
        view = self.view
        for port_id, interface in view.bindings.items():
            ifindex = view.ifindex_of_port.get(port_id)
            current = self.datapath.ifindex(interface)
            if ifindex is not None and current != ifindex:  # gone, or replaced by a new interface
                self.flows.by_key.clear()
                view.ifindex_of_port.pop(port_id, None)
                view.port_of_ifindex.pop(ifindex, None)
                self._remove_in_port(ifindex)
                self.flows.invalidate(f"port:{port_id}")
                self.counters["interfaces_lost"] += 1
                ifindex = None
            if ifindex is None and current is not None:
                self._try_attach(port_id)

    def _try_attach(self, port_id: str) -> None:
        view = self.view
        interface = view.bindings[port_id]
        ifindex = self.datapath.attach(interface)
        if ifindex is None:
            return  # not there yet: follow_interfaces retries
        view.ifindex_of_port[port_id] = ifindex
        view.port_of_ifindex[ifindex] = port_id
        self.flows.by_key.clear()  # (a result's outputs to this port were tunnels, or none, until now)
        port = view.snapshot.ports.get(port_id)
        tunnel_key = port.get("tunnel_key") if port is not None else None
        if tunnel_key:
            self.datapath.set_vni(tunnel_key, ifindex)
        self.counters["interfaces_attached"] += 1
        log.info("port %s: attached to %s (ifindex %d)", port_id, interface, ifindex)

    def _unbind(self, port_id: str, interface: str) -> None:
        view = self.view
        ifindex = view.ifindex_of_port.pop(port_id, None)
        view.bindings.pop(port_id, None)
        self.flows.by_key.clear()
        if ifindex is not None:
            view.port_of_ifindex.pop(ifindex, None)
            try:
                self.datapath.detach(interface)
            except Exception:  # the interface may be gone with its namespace
                log.debug("detach %s", interface, exc_info=True)
            self._remove_in_port(ifindex)
        self.flows.invalidate(f"port:{port_id}")

    def _remove_in_port(self, ifindex: int) -> None:
        self.datapath.forget_vnis_of(ifindex)
        self.datapath.forget_port(ifindex)
        self.flows.remove_in_port(ifindex)
