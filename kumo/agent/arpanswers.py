"""ARP answered by the kernel for the paths the agent has established (map kumo_arp_answers, bpf/lib/arp.h).

Why: a VM refreshes its neighbour entries with unicast ARP probes (an entry unconfirmed for 15-45 s goes
stale; 5 s after its next use the kernel probes). A probe or its reply is a new flow, so it needs an agent:
with the agent of either VM's host down, the probe goes unanswered, the entry fails, and an established
connection stops although every one of its kernel flows is in place (issue 21: a TCP receiver's entry for its
sender is never confirmed by TCP itself). So each booked IPv4 flow out of a local bridge port whose next hop
is an address on that bridge (the destination VM, or a router port) has the kernel answer ARP for that
address, on that port, with the MAC the flow already sends to. (A megaflow's address is that of the packet it
was made for: its key may not hold it.)

Exact, not a shortcut around the firewalls: before an answer goes in, the agent simulates what the VM's
own probe and the reply would do (the request from the port, and the reply from where the request went);
only if the request reaches the answering side and the reply comes back, or the topology answers the request
itself (ARP suppression), is the answer installed. Answers are counted by the flows that need them and go
with the last one (invalidation, expiry, eviction), and with the port; a restarted agent rebuilds them from
the flows it adopts."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from kumo.agent.view import HostView
from kumo.datapath.actions import match_fields
from kumo.datapath.datapath import Datapath
from kumo.datapath.flowmaps import is_megaflow
from kumo.datapath.layout import FlowKey
from kumo.flowstate.local import LocalFlowState
from kumo.flowstate.redis import RedisFlowState
from kumo.packet import PacketError, ip_to_int, is_multicast_mac, mac_to_bytes
from kumo.packet.arp import REPLY, REQUEST, Arp
from kumo.packet.ethernet import ETH_P_ARP, ETH_P_IP, Ethernet
from kumo.packet.frame import parse_frame
from kumo.simulation import simulate
from kumo.simulation.result import SimulationResult, Verdict
from kumo.simulation.view import LearnedTables

Answer = tuple[int, int, str]  # (ifindex, address asked for, MAC answered)


@dataclass(eq=False)
class ArpAnswers:
    datapath: Datapath
    view: HostView
    learned: LearnedTables
    flow_state: LocalFlowState | RedisFlowState
    counters: collections.Counter[str]
    _needs: dict[bytes, Answer] = field(default_factory=dict, init=False)  # booked flow -> the answer it needs
    _users: dict[tuple[int, int], tuple[str, int]] = field(default_factory=dict, init=False)  # -> (mac, flows)
    # answers the topology would not give, until it changes: new flows of such a pair simulate nothing more
    _refused: set[Answer] = field(default_factory=set, init=False)
    _refused_in: object = field(default=None, init=False)  # the snapshot they were judged on

    # --- FlowBook's observer -------------------------------------------------------------------------------
    def booked(self, raw: bytes, result: SimulationResult, sample: bytes) -> None:
        if is_megaflow(raw) and not sample:
            return  # (an adopted megaflow: the fields of its mask may not say which address its path needs)
        wanted = self._wanted(sample or raw, result)
        if wanted is None:
            return
        ifindex, ip, mac, src_mac, src_ip, port_id = wanted
        users = self._users.get((ifindex, ip))
        if users is not None:
            if users[0] != mac:  # another MAC for an address answered already: the first stays, until its flows go
                return
            self._users[(ifindex, ip)] = (mac, users[1] + 1)
        else:
            if self._refused_in is not self.view.snapshot:
                self._refused, self._refused_in = set(), self.view.snapshot
            if (ifindex, ip, mac) in self._refused:
                return
            if not self._exact(port_id, src_mac, src_ip, ip, mac):
                self._refused.add((ifindex, ip, mac))
                self.counters["arp_answers_refused"] += 1
                return
            self.datapath.set_arp_answer(ifindex, ip, mac)
            self._users[(ifindex, ip)] = (mac, 1)
            self.counters["arp_answers_installed"] += 1
        self._needs[raw] = (ifindex, ip, mac)

    def unbooked(self, raw: bytes) -> None:
        need = self._needs.pop(raw, None)
        if need is None:
            return
        ifindex, ip, mac = need
        users = self._users.get((ifindex, ip))
        if users is None or users[0] != mac:
            return
        if users[1] > 1:
            self._users[(ifindex, ip)] = (mac, users[1] - 1)
        else:
            del self._users[(ifindex, ip)]
            self.datapath.clear_arp_answer(ifindex, ip)

    def __len__(self) -> int:
        return len(self._users)

    # --- which answer a flow needs, and whether the topology would give it ---------------------------------
    def _wanted(self, raw: bytes, result: SimulationResult) -> tuple[int, int, str, str, int, str] | None:
        if result.verdict not in (Verdict.OUTPUT, Verdict.FLOOD):  # (a flood: the MAC's entry is not known, e.g.
            return None  # gone with the dead agent that had learned it)
        key = FlowKey.from_buffer_copy(raw)
        if key.eth_type != ETH_P_IP or key.vlan:
            return None
        port_id = self.view.port_of_ifindex.get(key.in_port)
        snapshot = self.view.snapshot
        port = snapshot.ports.get(port_id or "")
        if port_id is None or port is None or port["type"] != "bridge":
            return None
        fields = match_fields(key)
        dst_mac = fields["eth_dst"]
        if is_multicast_mac(dst_mac):
            return None
        router_side = snapshot.router_macs.get(port["device_id"], {}).get(dst_mac)
        if router_side is not None:  # routed: the VM's neighbour is its gateway, the router port
            gateway = snapshot.ports[router_side].peer
            if gateway is None or not gateway.get("port_address"):
                return None
            ip = ip_to_int(gateway["port_address"])
        elif result.ttl_decrement == 0 and "eth_dst" not in result.rewrites:
            ip = fields["ip_dst"]
        else:
            return None
        return key.in_port, ip, dst_mac, fields["eth_src"], fields["ip_src"], port_id

    def _exact(self, port_id: str, src_mac: str, src_ip: int, ip: int, mac: str) -> bool:
        """Would the topology answer the VM's probe with `mac`: the request answered on its way (suppression,
        a router), or delivered (to one port, or flooded to several) where a reply from `mac` comes back."""
        probe = Ethernet(mac, src_mac, ETH_P_ARP, Arp(REQUEST, src_mac, src_ip, "00:00:00:00:00:00", ip).build())
        first = self._simulate(probe.build(pad=True), port_id)
        if first is None:
            return False
        if first.verdict == Verdict.REPLY:
            return any(g.port_id == port_id and g.frame[6:12] == mac_to_bytes(mac) for g in first.generated)
        if first.verdict not in (Verdict.OUTPUT, Verdict.FLOOD) or not first.egress_port_ids:
            return False
        reply = Ethernet(src_mac, mac, ETH_P_ARP, Arp(REPLY, mac, ip, src_mac, src_ip).build()).build(pad=True)
        for egress in first.egress_port_ids:  # (flooded: whichever port holds the MAC, its reply comes back)
            back = self._simulate(reply, egress)
            if back is None or back.verdict != Verdict.OUTPUT or back.egress_port_ids != [port_id]:
                return False
        return True

    def _simulate(self, frame: bytes, port_id: str) -> SimulationResult | None:
        try:
            match = parse_frame(frame, port_id)
        except PacketError:
            return None
        return simulate(match, self.view.snapshot, self.learned, self.flow_state, frame=frame, trace=False)
