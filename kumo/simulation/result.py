"""What a simulation returns: a verdict with a named reason, actions, the wildcard match, tags, flow-state
writes, learned-state writes, generated packets and the trace of named steps."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kumo.packet.flowmatch import WildcardMatch


class Verdict(enum.StrEnum):
    OUTPUT = "output"  # to one exterior port
    FLOOD = "flood"  # to several exterior ports
    DROP = "drop"
    REPLY = "reply"  # consumed; the simulation generated an answer (ARP, DHCP, ICMP)
    CONSUME = "consume"  # consumed with nothing to send (e.g. an ARP reply the router learned from)
    PARK = "park"  # wait for an event (ARP resolution), then simulate again


class Reason(enum.StrEnum):
    """Why a packet went where it went; every drop has one (Cilium's DROP_* codes are the model)."""

    FORWARDED = "forwarded"
    FLOODED = "flooded"
    ARP_REPLY = "arp_reply"
    ARP_SUPPRESSED = "arp_suppressed"
    ARP_LEARNED = "arp_learned"
    DHCP_REPLY = "dhcp_reply"
    ICMP_ECHO_REPLY = "icmp_echo_reply"
    ICMP_ERROR = "icmp_error"
    WAITING_FOR_ARP = "waiting_for_arp"
    UNKNOWN_PORT = "unknown_port"
    UNKNOWN_DEVICE = "unknown_device"
    PORT_ADMIN_DOWN = "port_admin_down"
    DEVICE_ADMIN_DOWN = "device_admin_down"
    PORT_NOT_CONNECTED = "port_not_connected"
    LOOP_LIMIT = "loop_limit"
    CHAIN_DROP = "chain_drop"
    CHAIN_REJECT = "chain_reject"
    CHAIN_LOOP = "chain_loop"
    MULTICAST_SOURCE_MAC = "multicast_source_mac"
    HAIRPIN = "hairpin"
    VLAN_MISMATCH = "vlan_mismatch"
    NO_FLOOD_TARGETS = "no_flood_targets"
    NOT_FOR_ROUTER = "not_for_router"
    NOT_IPV4 = "not_ipv4"
    NO_ROUTE = "no_route"
    BLACKHOLE_ROUTE = "blackhole_route"
    REJECT_ROUTE = "reject_route"
    TTL_EXPIRED = "ttl_expired"
    LOCAL_NOT_HANDLED = "local_not_handled"
    ARP_NOT_IN_SUBNET = "arp_not_in_subnet"
    ARP_NOT_FOR_US = "arp_not_for_us"
    NAT_EXHAUSTED = "nat_exhausted"
    NO_POOL_MEMBER = "no_pool_member"
    DHCP_NO_HOST = "dhcp_no_host"
    FRAGMENTATION_NEEDED = "fragmentation_needed"
    PORT_SECURITY_MAC = "port_security_mac"  # a source MAC the port does not declare
    PORT_SECURITY_IP = "port_security_ip"  # ... a source IP
    PORT_SECURITY_ARP = "port_security_arp"  # ... ARP sender addresses


@dataclass(frozen=True, slots=True)
class TraceStep:
    device_id: str
    device_type: str  # "port" | "bridge" | "router"
    stage: str  # a stage name from kumo.simulation.pipeline
    what: str  # one readable sentence
    chain_id: str | None = None
    rule_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "device_type": self.device_type,
            "stage": self.stage,
            "what": self.what,
            "chain_id": self.chain_id,
            "rule_id": self.rule_id,
        }


@dataclass(frozen=True, slots=True)
class Generated:
    """A packet the simulation made (ARP/DHCP reply, ICMP error, ARP request): sent out of `port_id`
    (towards the VM when the port is exterior, into the peer device when it is interior)."""

    port_id: str
    frame: bytes
    what: str


class StateWrite(NamedTuple):  # a NamedTuple: immutable and cheap to make (several per new flow)
    """Flow state to record before the first packet is forwarded: kind "conntrack" or "nat"."""

    kind: str
    key: tuple[Any, ...]
    value: Any = None


class LearnWrite(NamedTuple):
    """Learned state for the store's tables: kind "mac" (bridge, mac, vlan -> port) or "arp" (router, ip -> mac)."""

    kind: str
    key: tuple[Any, ...]
    value: Any


class KernelConntrack(NamedTuple):
    """How the kernel can take a result's connection tracking over (docs/megaflows.md): the result depends
    on the packet's 5-tuple only through one query at `device` (answered `found`) and perhaps a record there;
    `seen` are the fields it read otherwise (its megaflow's mask)."""

    device: str
    found: bool
    seen: int
    record: str | None


@dataclass(slots=True)
class SimulationResult:
    verdict: Verdict
    reason: Reason
    egress_port_ids: list[str] = field(default_factory=list)
    rewrites: dict[str, Any] = field(default_factory=dict)  # field -> new value
    ttl_decrement: int = 0  # relative: the datapath decrements (and punts packets that would expire)
    match: WildcardMatch | None = None
    tags: set[Any] = field(default_factory=set)  # "device:<id>", "chain:<id>", ... or ("nat"|"conntrack", key)
    state_writes: list[StateWrite] = field(default_factory=list)
    learn_writes: list[LearnWrite] = field(default_factory=list)
    generated: list[Generated] = field(default_factory=list)
    park_until: tuple[str, ...] | None = None  # e.g. ("arp", router_id, ip)
    trace: list[TraceStep] = field(default_factory=list)
    inner_rewrites: dict[str, Any] = field(default_factory=dict)  # inside an ICMP error's quoted header
    one_off: bool = False  # about this packet only (not its flow): the wildcard table does not keep it
    path_mtu: int | None = None  # smallest MTU on the way: the datapath punts larger DF packets of the flow
    conntrack: KernelConntrack | None = None  # the kernel can answer its conntrack query (kumo.agent.masks)

    def describe(self) -> str:
        where = f" to {', '.join(self.egress_port_ids)}" if self.egress_port_ids else ""
        return f"{self.verdict.value} ({self.reason.value}){where}"
