"""The L4 load balancer on a router: a TCP packet to a VIP is DNATed to a pool member; replies from the
member are reverse-DNATed back to the VIP before the router's filters see them.

Members down or admin-down are not in the compiled VIP (see view.Snapshot). Choice is weighted and keyed by a
hash of the 5-tuple, or of the source address alone with `source_ip` persistence; the binding is recorded
so that the flow keeps its member. The flow holds the full 5-tuple either way.
"""

from __future__ import annotations

from kumo.packet import int_to_ip
from kumo.packet.flowhash import flow_hash
from kumo.packet.ipv4 import PROTO_TCP
from kumo.simulation import nat
from kumo.simulation.conntrack import five_tuple
from kumo.simulation.context import Context
from kumo.simulation.pipeline import Stage
from kumo.simulation.result import Reason, Verdict
from kumo.simulation.view import Vip


def _choose(vip: Vip, flow: tuple[int, int, int, int, int]) -> tuple[str, int, int]:
    total = sum(weight for *_, weight in vip.members)
    point = flow_hash((flow[1],) if vip.persistence else flow) % total  # persistence: the source alone
    for member_id, address, port, weight in vip.members:
        if point < weight:
            return member_id, address, port
        point -= weight
    raise AssertionError("unreachable: point < total")


def balance(ctx: Context, router_id: str) -> None:
    vips = ctx.topology.vips.get(router_id)
    if not vips:
        return
    match = ctx.match
    dst = match.get("ip_dst")
    candidates = [v for v in vips if v.address == dst]
    if not candidates or match.get("ip_proto") != PROTO_TCP:
        return
    dport = match.get("tp_dst")
    vip = next((v for v in candidates if v.port == dport), None)
    if vip is None:
        return
    flow = five_tuple(ctx)
    assert flow is not None
    ctx.tag(f"vip:{vip.id}", f"pool:{vip.pool_id}")
    if not vip.members:
        ctx.step(
            router_id, "router", Stage.ROUTER_L4LB, f"VIP {int_to_ip(vip.address)}:{vip.port} has no usable member"
        )
        raise ctx.finish(Verdict.DROP, Reason.NO_POOL_MEMBER)
    chosen = nat.dnat_binding(ctx, router_id, flow)
    if chosen is None:
        _, address, port = _choose(vip, flow)
        chosen = (address, port)
        nat.record_dnat(ctx, router_id, flow, address, port)
    match.set("ip_dst", chosen[0])
    match.set("tp_dst", chosen[1])
    ctx.step(
        router_id,
        "router",
        Stage.ROUTER_L4LB,
        f"VIP {int_to_ip(vip.address)}:{vip.port} -> member {int_to_ip(chosen[0])}:{chosen[1]}",
    )


def reverse(ctx: Context, router_id: str) -> None:
    """Replies from pool members get the VIP back as their source."""
    if not ctx.topology.vips.get(router_id) or ctx.match.get("ip_proto") != PROTO_TCP:
        return
    if nat.reverse(ctx, router_id, "rev_dnat"):
        ctx.step(router_id, "router", Stage.ROUTER_LB_REVERSE, "reply from a pool member: source back to the VIP")
