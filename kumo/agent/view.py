"""What the agent's packet thread knows of this host's place in the topology: the last snapshot of the
declared topology and what follows from it here (tunnel peers, the hosts that share stateful port groups),
and which ports are bound to this host and attached to which interface. Replaced or updated only by the
packet thread, between rounds (kumo.agent.changes, kumo.agent.ports); read by every part of a round."""

from __future__ import annotations

from dataclasses import dataclass, field

from kumo.simulation.view import Snapshot


@dataclass
class HostView:
    snapshot: Snapshot = field(default_factory=Snapshot)
    tunnel_peers: dict[str, int] = field(default_factory=dict)  # host id -> tunnel IP, for hosts sharing a zone
    stateful_hosts: dict[str, set[str]] = field(default_factory=dict)  # port -> hosts of its stateful groups' ports
    bindings: dict[str, str] = field(default_factory=dict)  # port id -> interface name (ports bound to this host)
    ifindex_of_port: dict[str, int] = field(default_factory=dict)  # attached ports only
    port_of_ifindex: dict[int, str] = field(default_factory=dict)

    def interface_names(self) -> dict[int, str]:
        """ifindex -> the interface name of the port attached there (the port id if unbound meanwhile)."""
        return {index: self.bindings.get(port, port) for port, index in self.ifindex_of_port.items()}
