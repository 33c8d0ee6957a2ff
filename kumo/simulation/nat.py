"""NAT: static 1:1 and dynamic DNAT/SNAT over address and port ranges; rev_dnat/rev_snat through the
recorded bindings. TCP and UDP ports; ICMP echo uses its identifier as the port.

Bindings are recorded twice, both keyed for a lookup from one packet alone: the forward key (so that a flow
simulated again reuses its translation) and the reply key (so that rev_* rules find it).
"""

from __future__ import annotations

from typing import Any

from kumo.packet.flowhash import flow_hash
from kumo.packet.ipv4 import PROTO_ICMP
from kumo.simulation.conntrack import five_tuple, quoted_five_tuple
from kumo.simulation.context import Context
from kumo.simulation.result import StateWrite
from kumo.simulation.view import NatTarget


def _rewrite(ctx: Context, proto: int, side: str, ip: int, port: int) -> None:
    ctx.match.set(f"ip_{side}", ip)
    if proto == PROTO_ICMP:
        ctx.match.set("icmp_id", port)
    else:
        ctx.match.set(f"tp_{side}", port)


def _record(ctx: Context, key: tuple[Any, ...], value: tuple[Any, ...]) -> None:
    ctx.state_writes.append(StateWrite("nat", key, value))


def _pick(targets: list[NatTarget], flow: tuple[int, ...], keep_port: int) -> tuple[int, int]:
    """A deterministic choice among the targets' addresses and ports (by a hash of the flow)."""
    spread = flow_hash(flow)
    target = targets[spread % len(targets)]
    ip = target.first + spread % (target.last - target.first + 1)
    port_from = target.port_from
    port = keep_port if not port_from else port_from + spread % (target.port_to - port_from + 1)
    return ip, port


def _address_only(ctx: Context, side: str, targets: list[NatTarget]) -> bool:
    """No connection identity (e.g. a later fragment): translate the address alone, statelessly."""
    ip, _ = _pick(targets, (ctx.match.get(f"ip_{side}") or 0,), 0)
    ctx.match.set(f"ip_{side}", ip)
    return True


def dnat_binding(ctx: Context, device_id: str, flow: tuple[int, int, int, int, int]) -> tuple[Any, ...] | None:
    """The translation a DNATed flow already has (the flow simulated again), or None."""
    key = ("dnat-fwd", device_id, *flow)
    ctx.tags.add(("nat", key))
    return ctx.flow_state.nat_get(key)


def record_dnat(
    ctx: Context, device_id: str, flow: tuple[int, int, int, int, int], new_dst: int, new_dport: int
) -> None:
    """Both keys of a DNAT binding (also used by the L4 load balancer): forward, and the reply's."""
    proto, src, sport, dst, dport = flow
    _record(ctx, ("dnat-fwd", device_id, *flow), (new_dst, new_dport))
    _record(ctx, ("dnat", device_id, proto, new_dst, new_dport, src, sport), (dst, dport))


def dnat(ctx: Context, device_id: str, targets: list[NatTarget]) -> bool:
    flow = five_tuple(ctx)
    if flow is None:
        return _address_only(ctx, "dst", targets)
    chosen = dnat_binding(ctx, device_id, flow)
    if chosen is None:
        chosen = _pick(targets, flow, flow[4])
        record_dnat(ctx, device_id, flow, *chosen)
    _rewrite(ctx, flow[0], "dst", chosen[0], chosen[1])
    return True


def snat(ctx: Context, device_id: str, targets: list[NatTarget]) -> bool:
    flow = five_tuple(ctx)
    if flow is None:
        return _address_only(ctx, "src", targets)
    proto, src, sport, dst, dport = flow
    fwd_key = ("snat-fwd", device_id, *flow)
    chosen = ctx.flow_state.nat_get(fwd_key)
    ctx.tags.add(("nat", fwd_key))
    if chosen is None:
        chosen = ctx.flow_state.snat_allocate(device_id, targets, (proto, dst, dport, src, sport))
        if chosen is None:
            return False
        _record(ctx, fwd_key, chosen)
        # the reply's key: an ICMP echo reply carries the translated identifier in both "port" places
        reply_dport = chosen[1] if proto == PROTO_ICMP else dport
        _record(ctx, ("snat", device_id, proto, dst, reply_dport, chosen[0], chosen[1]), (src, sport))
    _rewrite(ctx, proto, "src", chosen[0], chosen[1])
    return True


def reverse(ctx: Context, device_id: str, kind: str) -> bool:
    """rev_dnat (restore the source of a reply) or rev_snat (restore its destination); False if no binding.

    An ICMP error about a translated flow carries the translated header inside it: the binding is found from
    that quoted header, and both the outer address and the quoted header are restored."""
    table = "dnat" if kind == "rev_dnat" else "snat"
    flow = five_tuple(ctx)
    if flow is None:
        return _reverse_icmp_error(ctx, device_id, table)
    proto, src, sport, dst, dport = flow
    key = (table, device_id, proto, src, sport, dst, dport)
    ctx.tags.add(("nat", key))
    original = ctx.flow_state.nat_get(key)
    if original is None:
        return False
    _rewrite(ctx, proto, "src" if table == "dnat" else "dst", original[0], original[1])
    return True


def _reverse_icmp_error(ctx: Context, device_id: str, table: str) -> bool:
    quoted = quoted_five_tuple(ctx)
    if quoted is None:
        return False
    proto, src, sport, dst, dport = quoted
    # The quoted packet went the forward way: its reply key is the quoted tuple turned around.
    key = (table, device_id, proto, dst, dport, src, sport)
    original = ctx.flow_state.nat_get(key)
    if original is None:
        return False
    ip, port = original
    port_field = "icmp_id" if proto == PROTO_ICMP else None
    if table == "snat":  # we translated the quoted source: restore it, and the error's destination
        ctx.match.set("ip_dst", ip)
        ctx.inner_rewrites.update({"ip_src": ip, port_field or "tp_src": port})
    else:  # we translated the quoted destination: restore it, and the error's source
        ctx.match.set("ip_src", ip)
        ctx.inner_rewrites.update({"ip_dst": ip, port_field or "tp_dst": port})
    return True
