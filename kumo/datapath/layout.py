"""The datapath's key, value and upcall layouts and its action codes, as ctypes structures.

They mirror bpf/lib/kumo.h field for field; tests/unit/datapath/test_layout.py compiles static assertions
generated from these declarations against that header for the BPF target, so a drift fails the build.
"""

from __future__ import annotations

import ctypes
import enum
import struct

MAX_OUT = 16  # outputs of one value; a longer flood continues in links (bpf/lib/kumo.h)
LINK_PORT = 0xFFFFFFFF  # the in_port of a flood link's key
MAX_LINKS = 16  # values in a flood's chain, its flow's own included
MAX_MASKS = 32  # megaflow masks in use at once (bpf/lib/kumo.h)
DEFAULT_MAX_MASKS_PER_PORT = 8  # masks one input port's megaflows may use (kumo.agent.masks)
SNAP = 1600
INJECT_MARK = 0x80000000

FRAG_NONE, FRAG_FIRST, FRAG_LATER = 0, 1, 2
FRAGMENT_CODES = {"none": FRAG_NONE, "first": FRAG_FIRST, "later": FRAG_LATER}
VLAN_TAGGED = 0x1000

# Upcalls per second per input port: one VM's new flows may take a third of what the agent serves on a core
# here (~15,000/s). Raise it with --upcall-rate on hosts with cores to spare.
DEFAULT_UPCALL_RATE = 5000
DEFAULT_UPCALL_BURST = 500
# Storm control (kumo.agent.storms): an interface over its upcall rate for STORM_ENTER_MS is held to the storm
# rate until it has stayed at or under it for STORM_LEAVE_MS.
DEFAULT_STORM_UPCALL_RATE = 1000
STORM_ENTER_MS = 500
STORM_LEAVE_MS = 5000

UPCALL_MISS, UPCALL_TTL, UPCALL_MTU, UPCALL_INJECT_MISS = 0, 1, 2, 3
CT_UNTRACKED, CT_ESTABLISHED, CT_NEW = 0, 1, 2  # FlowKey.ct (bpf/lib/conntrack.h)


class Action(enum.IntFlag):
    DROP = 1 << 0
    SET_ETH_SRC = 1 << 1
    SET_ETH_DST = 1 << 2
    SET_IP_SRC = 1 << 3
    SET_IP_DST = 1 << 4
    SET_TP_SRC = 1 << 5
    SET_TP_DST = 1 << 6
    SET_ICMP_ID = 1 << 7
    DEC_TTL = 1 << 8
    VLAN_POP = 1 << 9
    VLAN_PUSH = 1 << 10
    OUTPUT = 1 << 11
    TUNNEL = 1 << 12
    MORE_OUT = 1 << 13
    CT_QUERY = 1 << 14
    CT_RECORD = 1 << 15


# Counter names, in the order of enum kumo_stat.
STATS = (
    "rx",
    "hit",
    "upcall",
    "upcall_rate_limited",
    "upcall_ring_full",
    "malformed",
    "flow_drop",
    "ttl_punt",
    "mtu_punt",
    "action_error",
    "inject_unmarked",
    "upcall_truncated",
    "tunnel_rx",
    "tunnel_delivered",
    "tunnel_unknown_vni",
    "tunnel_no_key",
    "flood_link_missing",
    "upcall_held",
    "speaker_in",
    "speaker_out",
    "arp_answered",
    "megaflow_hit",
    "mask_probes",
    "ct_established",
    "ct_new",
    "ct_recorded",
    "ct_tag_unknown",
    "tunnel_stranger",
)

Mac = ctypes.c_uint8 * 6


class FlowKey(ctypes.Structure):
    _fields_ = [
        ("in_port", ctypes.c_uint32),
        ("eth_src", Mac),
        ("eth_dst", Mac),
        ("eth_type", ctypes.c_uint16),
        ("vlan", ctypes.c_uint16),
        ("ip_src", ctypes.c_uint32),
        ("ip_dst", ctypes.c_uint32),
        ("ip_proto", ctypes.c_uint8),
        ("ip_tos", ctypes.c_uint8),
        ("fragment", ctypes.c_uint8),
        ("ct", ctypes.c_uint8),  # CT_*: what the kernel's conntrack answered (0 as parsed)
        ("tp_src", ctypes.c_uint16),
        ("tp_dst", ctypes.c_uint16),
        ("icmp_id", ctypes.c_uint16),
        ("pad1", ctypes.c_uint16),
    ]


class MegaflowKey(ctypes.Structure):
    """A megaflow's key: a packet's FlowKey ANDed with a mask, and the mask's id (bpf/lib/megaflows.h)."""

    _fields_ = [("key", FlowKey), ("mask_id", ctypes.c_uint32)]


class MaskList(ctypes.Structure):
    """The masks in the order the program tries them."""

    _fields_ = [("n", ctypes.c_uint32), ("ids", ctypes.c_uint32 * MAX_MASKS)]


class CtKey(ctypes.Structure):
    """A connection in kumo_conntrack (bpf/lib/conntrack.h): zone, then the 5-tuple as the flow key has it."""

    _fields_ = [
        ("zone", ctypes.c_uint64),
        ("src", ctypes.c_uint32),
        ("dst", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
    ]


class CtEntry(ctypes.Structure):
    _fields_ = [("last_ns", ctypes.c_uint64)]


class Output(ctypes.Structure):
    """A local interface (remote 0), or the VXLAN device with VNI and remote tunnel IPv4 (host order)."""

    _fields_ = [
        ("ifindex", ctypes.c_uint32),
        ("tunnel_key", ctypes.c_uint32),
        ("remote", ctypes.c_uint32),
    ]


class FlowActions(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("eth_src", Mac),
        ("eth_dst", Mac),
        ("ip_src", ctypes.c_uint32),
        ("ip_dst", ctypes.c_uint32),
        ("tp_src", ctypes.c_uint16),
        ("tp_dst", ctypes.c_uint16),
        ("icmp_id", ctypes.c_uint16),
        ("vlan", ctypes.c_uint16),
        ("ttl_dec", ctypes.c_uint8),
        ("n_out", ctypes.c_uint8),
        ("mtu", ctypes.c_uint16),
        ("ct_tag", ctypes.c_uint16),
        ("pad2", ctypes.c_uint16),
        ("ct_zone", ctypes.c_uint64),
        ("out", Output * MAX_OUT),
    ]


class TunnelCount(ctypes.Structure):
    """struct kumo_tunnel_count (lib/stats.h): one CPU's count of a tunnel peer's traffic."""

    FIELDS = ("tx_packets", "tx_bytes", "rx_packets", "rx_bytes")
    _fields_ = [(name, ctypes.c_uint64) for name in FIELDS]


class FlowValue(ctypes.Structure):
    _fields_ = [
        ("act", FlowActions),
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
        ("last_used_ns", ctypes.c_uint64),
    ]


class UpcallHeader(ctypes.Structure):
    """The head of struct kumo_upcall; the packet's bytes follow (cap_len of them)."""

    _fields_ = [
        ("in_port", ctypes.c_uint32),
        ("len", ctypes.c_uint32),
        ("cap_len", ctypes.c_uint32),
        ("reason", ctypes.c_uint32),
        ("queued_ns", ctypes.c_uint64),  # CLOCK_MONOTONIC, as time.monotonic_ns()
        ("key", FlowKey),  # the key the kernel looked up
    ]


# The upcall's head before its key, read with one struct call per upcall instead of a ctypes object
# (tests/unit/datapath/test_layout.py holds it to UpcallHeader).
UPCALL_HEAD = struct.Struct("=IIIIQ")  # in_port, len, cap_len, reason, queued_ns


class Config(ctypes.Structure):
    _fields_ = [
        ("inject_ifindex", ctypes.c_uint32),
        ("upcall_rate", ctypes.c_uint32),
        ("upcall_burst", ctypes.c_uint32),
        ("storm_rate", ctypes.c_uint32),
        ("storm_enter_ms", ctypes.c_uint32),
        ("storm_leave_ms", ctypes.c_uint32),
        ("ct_timeout_s", ctypes.c_uint32),
    ]


class Speaker(ctypes.Structure):
    """An entry of kumo_speakers (lib/speakers.h): an uplink's BGP speaker, keyed by either interface."""

    _fields_ = [
        ("to_ifindex", ctypes.c_uint32),
        ("addr", ctypes.c_uint32),  # network order, as the packet carries it
        ("uplink", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class ArpKey(ctypes.Structure):
    """A key of kumo_arp_answers (lib/arp.h): the interface a request arrives on, the address asked for."""

    _fields_ = [("ifindex", ctypes.c_uint32), ("ip", ctypes.c_uint32)]  # ip in network order


class ArpAnswer(ctypes.Structure):
    _fields_ = [("mac", Mac), ("pad", ctypes.c_uint16)]


class PortLimit(ctypes.Structure):
    """A bound interface's storm control state, kept by the program (kumo.agent.storms)."""

    _fields_ = [
        ("offered", ctypes.c_uint64),
        ("window_ns", ctypes.c_uint64),
        ("window_offered", ctypes.c_uint64),
        ("over_since_ns", ctypes.c_uint64),
        ("calm_since_ns", ctypes.c_uint64),
        ("storming_since_ns", ctypes.c_uint64),
        ("storms", ctypes.c_uint64),
    ]


# (ctypes structure, C struct name) pairs the layout test checks.
CHECKED = (
    (FlowKey, "kumo_flow_key"),
    (MegaflowKey, "kumo_megaflow_key"),
    (MaskList, "kumo_mask_list"),
    (CtKey, "kumo_ct_key"),
    (CtEntry, "kumo_ct_entry"),
    (Output, "kumo_output"),
    (FlowActions, "kumo_flow_actions"),
    (FlowValue, "kumo_flow_value"),
    (UpcallHeader, "kumo_upcall"),
    (Config, "kumo_config"),
    (PortLimit, "kumo_port_limit"),
    (Speaker, "kumo_speaker"),
    (ArpKey, "kumo_arp_key"),
    (ArpAnswer, "kumo_arp_answer"),
)
