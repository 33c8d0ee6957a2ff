"""The L4 load balancer on a router: a TCP or UDP packet to a VIP (of its pool's protocol) is DNATed to a pool
member; replies from the member are reverse-DNATed back to the VIP before the router's filters see them.

Members down, admin-down or of weight 0 (draining) are not in the compiled VIP (see view.Snapshot). The
choice is weighted rendezvous hashing (kumo.packet.flowhash) of the 5-tuple, or of the source address alone
with `source_ip` persistence or the `source_ip` method: a member going down or coming back, or re-weighted,
moves only its own share of new connections. The binding is recorded, so that a connection keeps its member
whatever changes after (a drained member keeps its connections). The flow holds the full 5-tuple either way.
"""

from __future__ import annotations

from kumo.packet import int_to_ip
from kumo.packet.flowhash import weighted_rendezvous
from kumo.packet.ipv4 import PROTO_TCP, PROTO_UDP
from kumo.simulation import nat
from kumo.simulation.conntrack import five_tuple
from kumo.simulation.context import Context
from kumo.simulation.pipeline import Stage
from kumo.simulation.result import Reason, Verdict
from kumo.simulation.view import Vip


def _choose(vip: Vip, flow: tuple[int, int, int, int, int]) -> tuple[int, int]:
    index = weighted_rendezvous((flow[1],) if vip.persistence else flow, vip.member_keys, vip.member_weights)
    _, address, port, _ = vip.members[index]
    return address, port


def balance(ctx: Context, router_id: str) -> None:
    vips = ctx.topology.vips.get(router_id)
    if not vips:
        return
    match = ctx.match
    dst = match.get("ip_dst")
    candidates = [v for v in vips if v.address == dst]
    if not candidates:
        return
    proto = match.get("ip_proto")
    if proto not in (PROTO_TCP, PROTO_UDP):
        return
    dport = match.get("tp_dst")
    vip = next((v for v in candidates if v.port == dport and v.protocol == proto), None)
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
        chosen = _choose(vip, flow)
        address, port = chosen
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
    """Replies from pool members get the VIP back as their source. Only a packet from a member's address can be
    one: any other is left after reading its source address alone (so that, e.g., connections from clients
    to servers behind the router stay megaflows, docs/megaflows.md)."""
    if ctx.match.get("ip_src") not in ctx.topology.member_addresses.get(router_id, ()):
        return
    if ctx.match.get("ip_proto") not in (PROTO_TCP, PROTO_UDP):
        return
    if nat.reverse(ctx, router_id, "rev_dnat"):
        vip = next((v for v in ctx.topology.vips[router_id] if (v.address, v.port) == _source(ctx)), None)
        if vip is not None:
            ctx.tag(f"pool:{vip.pool_id}")  # (the pool's statistics count the replies' bytes: kumo.agent.lbstats)
        ctx.step(router_id, "router", Stage.ROUTER_LB_REVERSE, "reply from a pool member: source back to the VIP")


def _source(ctx: Context) -> tuple[int, int]:
    """The (address, port) a reply has as its source (after rev_dnat: a VIP's), without reading them again."""
    return ctx.match.peek("ip_src"), ctx.match.peek("tp_src")
