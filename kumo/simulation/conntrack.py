"""Connection tracking: a forward flow's key is recorded on first sight; replies are recognised by it.

Key: (proto, src, sport, dst, dport, device) where device is the device the forward flow entered first.
A reply is recognised at that same device (typically the VM's bridge, in its port's outbound filter), with
its tuple reversed. ICMP echo uses the identifier as both ports. Recording reads the 5-tuple, so only
devices whose filters use connection state pay for exact flows (MidoNet's rule, kept): see Snapshot
`stateful_devices`.
"""

from __future__ import annotations

from typing import Any

from kumo.packet import PacketError
from kumo.packet.ethernet import Ethernet
from kumo.packet.flowmatch import BIT
from kumo.packet.icmp import ECHO_REPLY, ECHO_REQUEST, ERROR_TYPES, Icmp
from kumo.packet.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP, IPv4
from kumo.simulation.context import Context


def five_tuple(ctx: Context) -> tuple[int, int, int, int, int] | None:
    """(proto, src, sport, dst, dport) as the packet is now, or None if it has no connection identity."""
    match = ctx.match
    if match.get("eth_type") != 0x0800:
        return None
    proto = match.get("ip_proto")
    if proto in (PROTO_TCP, PROTO_UDP):
        if match.get("fragment") == "later":
            return None
        return proto, match.get("ip_src"), match.get("tp_src"), match.get("ip_dst"), match.get("tp_dst")
    if proto == PROTO_ICMP and match.get("icmp_type") in (ECHO_REQUEST, ECHO_REPLY):
        ident = match.get("icmp_id")
        return proto, match.get("ip_src"), ident, match.get("ip_dst"), ident
    return None


def quoted_five_tuple(ctx: Context) -> tuple[int, int, int, int, int] | None:
    """The (proto, src, sport, dst, dport) of the packet an ICMP error quotes (RFC 792: its IP header and
    first 8 payload bytes), or None. Reading it makes the result about this packet only."""
    match = ctx.match
    if match.get("ip_proto") != PROTO_ICMP or match.get("icmp_type") not in ERROR_TYPES or ctx.frame is None:
        return None
    try:
        icmp = Icmp.parse(IPv4.parse(Ethernet.parse(ctx.frame).payload).payload)
        head = icmp.payload
        ihl = (head[0] & 0x0F) * 4
        proto, src, dst = head[9], int.from_bytes(head[12:16], "big"), int.from_bytes(head[16:20], "big")
        if proto in (PROTO_TCP, PROTO_UDP):
            sport, dport = int.from_bytes(head[ihl : ihl + 2], "big"), int.from_bytes(head[ihl + 2 : ihl + 4], "big")
        elif proto == PROTO_ICMP:
            sport = dport = int.from_bytes(head[ihl + 4 : ihl + 6], "big")  # echo identifier
        else:
            return None
    except (PacketError, IndexError):
        return None
    ctx.one_off = True
    return proto, src, sport, dst, dport


def forward_key(flow: tuple[int, int, int, int, int], device_id: str) -> tuple[Any, ...]:
    return (*flow, device_id)


def return_key(flow: tuple[int, int, int, int, int], device_id: str) -> tuple[Any, ...]:
    proto, src, sport, dst, dport = flow
    return proto, dst, dport, src, sport, device_id


_QUIET = BIT["ip_src"] | BIT["ip_dst"] | BIT["tp_src"] | BIT["tp_dst"]


def tracked_tuple(ctx: Context, device_id: str) -> tuple[int, int, int, int, int] | None:
    """five_tuple() for a conntrack query or record at `device_id`. A TCP/UDP tuple still as it entered (no NAT
    before) is read without marking its addresses and ports, and the device noted (Context.ct_devices): the
    kernel can answer such a query itself (the result then holds for every connection with the same answer,
    docs/megaflows.md). Any other is read, and marked, as five_tuple() does."""
    match = ctx.match
    if match.get("eth_type") != 0x0800 or match.get("ip_proto") not in (PROTO_TCP, PROTO_UDP):
        return five_tuple(ctx)
    if match.get("fragment") == "later" or match.dirty & _QUIET:
        return five_tuple(ctx)
    ctx.ct_devices.add(device_id)
    ctx.ct_quiet |= _QUIET
    return (
        match.peek("ip_proto"),
        match.peek("ip_src"),
        match.peek("tp_src"),
        match.peek("ip_dst"),
        match.peek("tp_dst"),
    )


def is_return_flow(ctx: Context, device_id: str) -> bool:
    flow = tracked_tuple(ctx, device_id)
    if flow is None:
        return False
    key = return_key(flow, device_id)
    ctx.tags.add(("conntrack", key))
    found = ctx.flow_state.conntrack_has(key)
    ctx.ct_answers[device_id] = found
    return found
