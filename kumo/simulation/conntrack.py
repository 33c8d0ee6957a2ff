"""Connection tracking: a forward flow's key is recorded on first sight; replies are recognised by it.

Key: (proto, src, sport, dst, dport, device) where device is the device the forward flow entered first.
A reply is recognised at that same device (typically the VM's bridge, in its port's outbound filter), with
its tuple reversed. ICMP echo uses the identifier as both ports. Recording reads the 5-tuple, so only
devices whose filters use connection state pay for exact flows (MidoNet's rule, kept): see Snapshot
`stateful_devices`.
"""

from __future__ import annotations

from typing import Any

from kumo.packet.icmp import ECHO_REPLY, ECHO_REQUEST
from kumo.packet.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP
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


def forward_key(flow: tuple[int, int, int, int, int], device_id: str) -> tuple[Any, ...]:
    return (*flow, device_id)


def return_key(flow: tuple[int, int, int, int, int], device_id: str) -> tuple[Any, ...]:
    proto, src, sport, dst, dport = flow
    return proto, dst, dport, src, sport, device_id


def is_return_flow(ctx: Context, device_id: str) -> bool:
    flow = five_tuple(ctx)
    if flow is None:
        return False
    key = return_key(flow, device_id)
    ctx.tag(f"conntrack:{key}")
    return ctx.flow_state.conntrack_has(key)
