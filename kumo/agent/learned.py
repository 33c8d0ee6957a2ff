"""The agent's copy of the learned MAC and ARP tables: read by every simulation, fed by the store's state
tables (entries learned anywhere) and by this agent's own learning (seen at once, written behind)."""

from __future__ import annotations

from typing import Any

from kumo.packet import ip_to_int
from kumo.simulation.result import LearnWrite, SimulationResult
from kumo.topology.state import ARP_TABLE, MAC_TABLE, parse_arp_key, parse_mac_key
from kumo.topology.store.base import StateChange, Store


class AgentLearned:
    def __init__(self) -> None:
        self.macs: dict[tuple[str, str, int | None], str] = {}
        self.arps: dict[tuple[str, int], str] = {}

    def load(self, store: Store) -> None:
        macs = {parse_mac_key(k): v.get("port_id", "") for k, v in store.state_list(MAC_TABLE).items()}
        arps = {}
        for key, value in store.state_list(ARP_TABLE).items():
            router, ip = parse_arp_key(key)
            arps[(router, ip_to_int(ip))] = value.get("mac", "")
        self.macs, self.arps = macs, arps

    def mac_port(self, bridge_id: str, mac: str, vlan: int | None) -> str | None:
        return self.macs.get((bridge_id, mac, vlan))

    def arp_mac(self, router_id: str, ip: int) -> str | None:
        return self.arps.get((router_id, ip))

    def apply(self, change: StateChange) -> str | None:
        """Fold a state-table change in; returns the tag of the flows that depended on the entry, or None
        when nothing changed (e.g. the store echoing this agent's own write)."""
        if change.table == MAC_TABLE:
            bridge, mac, vlan = parse_mac_key(change.key)
            value = None if change.new is None else change.new.get("port_id", "")
            return mac_tag(bridge, mac, vlan) if _put(self.macs, (bridge, mac, vlan), value) else None
        if change.table == ARP_TABLE:
            router, ip = parse_arp_key(change.key)
            value = None if change.new is None else change.new.get("mac", "")
            return arp_tag(router, ip_to_int(ip)) if _put(self.arps, (router, ip_to_int(ip)), value) else None
        return None


def _put(table: dict[Any, str], key: Any, value: str | None) -> bool:
    """Set (or, with None, remove) an entry; True if that changed the table."""
    if table.get(key) == value:
        return False
    if value is None:
        del table[key]
    else:
        table[key] = value
    return True


def mac_tag(bridge: str, mac: str, vlan: int | None) -> str:
    return f"mac:{bridge}/{mac}/{vlan}"  # as kumo.simulation.bridge tags a lookup


def arp_tag(router: str, ip: int) -> str:
    return f"arp:{router}/{ip}"  # as kumo.simulation.router tags a next-hop lookup


def learn_tag(write: LearnWrite) -> str:
    """The tag of what a learned entry changes (the lookups that read it)."""
    return mac_tag(*write.key) if write.kind == "mac" else arp_tag(*write.key)


def stale_by_own_learning(result: SimulationResult) -> bool:
    """Whether `result` read an entry its own simulation then learned (a frame to its sender's own MAC, still
    unknown: flooded, where the entry learned from it says hairpin): it no longer holds once learned."""
    return any(learn_tag(write) in result.tags for write in result.learn_writes)


def stale_by_own_state(result: SimulationResult) -> bool:
    """Whether `result` read the absence of a conntrack entry it then wrote (a packet whose reversed 5-tuple is
    its own, recorded as a forward flow: it is its own reply from then on). (A NAT binding a result looked up
    and then made is the one it applies: the next packet finds it and does the same.)"""
    return any(w.kind == "conntrack" and ("conntrack", w.key) in result.tags for w in result.state_writes)
