"""A router: L2 check, ARP, load balancing, pre-routing filter (DNAT), routing (longest prefix, source
filter, weight, ECMP), local delivery, TTL, post-routing filter (SNAT), next-hop MAC.

TTL: a packet with TTL > 1 is not keyed on its TTL; the result carries a relative decrement, and the
datapath returns packets that would expire to the agent, which simulates them with the TTL read.
"""

from __future__ import annotations

from typing import Any

from kumo.packet import PacketError, int_to_ip, ip_to_int
from kumo.packet.arp import REPLY, REQUEST
from kumo.packet.flowhash import rendezvous
from kumo.packet.frame import ip_packet
from kumo.packet.icmp import (
    ADMIN_PROHIBITED,
    DEST_UNREACH,
    ECHO_REQUEST,
    FRAG_NEEDED,
    NET_UNREACH,
    TIME_EXCEEDED,
    TTL_EXCEEDED,
)
from kumo.packet.ipv4 import HEADER as IP_HEADER
from kumo.packet.ipv4 import PROTO_ICMP
from kumo.simulation import l4lb, replies
from kumo.simulation.conntrack import five_tuple
from kumo.simulation.context import Context
from kumo.simulation.pipeline import Stage
from kumo.simulation.ports import filter_or_drop
from kumo.simulation.result import Generated, LearnWrite, Reason, Verdict
from kumo.simulation.view import DeviceView, PortView, Route, cidr_to_int, prefix_mask

Obj = dict[str, Any]


def _in_port_subnet(port: Obj, ip: int) -> bool:
    net, length = cidr_to_int(port["network_cidr"])
    return ip & prefix_mask(length) == net


def _icmp_error(ctx: Context, rid: str, port: Obj, icmp_type: int, code: int, what: str, mtu: int = 0) -> None:
    if replies.icmp_error_allowed(ctx.match):
        frame = replies.icmp_error(
            ctx.match, ctx.frame, port["port_mac"], ip_to_int(port["port_address"]), icmp_type, code, mtu
        )
        ctx.generated.append(Generated(port["id"], frame, what))
        ctx.step(rid, "router", Stage.ROUTER_ROUTING, f"send {what} to {int_to_ip(ctx.match.original('ip_src'))}")
    else:
        ctx.step(rid, "router", Stage.ROUTER_ROUTING, f"no {what}: RFC 1812 §4.3.2.7 forbids one here")


def process(ctx: Context, router: DeviceView, in_port: PortView) -> PortView:
    """The egress router port of a routed packet (before its filters). Raises Finished otherwise."""
    rid = router["id"]
    match = ctx.match
    ctx.tags.add(router.tag)
    if not router.up:
        ctx.step(rid, "router", Stage.ROUTER_ADMIN, "router is administratively down: drop")
        raise ctx.finish(Verdict.DROP, Reason.DEVICE_ADMIN_DOWN)
    dst_mac = match.get("eth_dst")
    eth_type = match.get("eth_type")
    if eth_type == 0x0806:
        _arp(ctx, rid, in_port)
    if dst_mac != in_port["port_mac"]:
        ctx.step(rid, "router", Stage.ROUTER_L2_CHECK, f"frame to {dst_mac}, not to this port's MAC: drop")
        raise ctx.finish(Verdict.DROP, Reason.NOT_FOR_ROUTER)
    if eth_type != 0x0800:
        ctx.step(rid, "router", Stage.ROUTER_L2_CHECK, f"ethertype {eth_type:#06x} is not IPv4: drop")
        raise ctx.finish(Verdict.DROP, Reason.NOT_IPV4)

    def prohibited() -> None:  # what a filter's reject rule answers
        _icmp_error(ctx, rid, in_port, DEST_UNREACH, ADMIN_PROHIBITED, "ICMP admin prohibited")

    has_vips = rid in ctx.topology.vips
    if has_vips:
        l4lb.reverse(ctx, rid)
    filter_or_drop(ctx, router.inbound, rid, "router", Stage.ROUTER_PRE_ROUTING, prohibited)
    if has_vips:
        l4lb.balance(ctx, rid)

    route = _route(ctx, rid)
    if route is None:
        ctx.step(rid, "router", Stage.ROUTER_ROUTING, f"no route to {int_to_ip(match.peek('ip_dst'))}")
        _icmp_error(ctx, rid, in_port, DEST_UNREACH, NET_UNREACH, "ICMP net unreachable")
        raise ctx.finish(Verdict.DROP, Reason.NO_ROUTE)
    if route.type == "blackhole":
        ctx.step(rid, "router", Stage.ROUTER_ROUTING, f"blackhole route {route.id}: drop")
        raise ctx.finish(Verdict.DROP, Reason.BLACKHOLE_ROUTE)
    if route.type == "reject":
        ctx.step(rid, "router", Stage.ROUTER_ROUTING, f"reject route {route.id}")
        prohibited()
        raise ctx.finish(Verdict.DROP, Reason.REJECT_ROUTE)
    if route.type == "local":
        _local(ctx, rid, in_port)

    out_port = ctx.topology.ports.get(route.next_hop_port_id or "")
    if out_port is None:
        raise ctx.finish(Verdict.DROP, Reason.UNKNOWN_PORT)
    if ctx.tracing:
        where = f"{int_to_ip(route.dst)}/{route.dst_len} via {out_port['id']}"
        ctx.step(rid, "router", Stage.ROUTER_ROUTING, f"route {route.id} to {where}")

    _check_mtu(ctx, rid, in_port, out_port)

    ttl = match.peek("ip_ttl") or 0
    if ttl <= 1:
        match.get("ip_ttl")  # the decision read the TTL: such packets are keyed on it
        _icmp_error(ctx, rid, in_port, TIME_EXCEEDED, TTL_EXCEEDED, "ICMP time exceeded")
        raise ctx.finish(Verdict.DROP, Reason.TTL_EXPIRED)
    match.set("ip_ttl", ttl - 1)
    ctx.ttl_decrement += 1

    ctx.egress_port = out_port["id"]
    filter_or_drop(ctx, router.outbound, rid, "router", Stage.ROUTER_POST_ROUTING, prohibited)

    _next_hop(ctx, rid, route, out_port)
    return out_port


def _check_mtu(ctx: Context, rid: str, in_port: Obj, out_port: Obj) -> None:
    """RFC 1191: a DF packet larger than the egress MTU gets "fragmentation needed" with that MTU. Only the
    packet at hand can be measured, so the flow carries the MTU and the datapath punts larger packets."""
    mtu = out_port.get("mtu")
    if not mtu:
        return
    ctx.path_mtu = mtu if ctx.path_mtu is None else min(ctx.path_mtu, mtu)
    if ctx.frame is None:
        return
    try:
        ip = ip_packet(ctx.frame)
    except PacketError:
        return
    length = IP_HEADER.size + len(ip.options) + len(ip.payload)
    if ip.dont_fragment and length > mtu:
        ctx.one_off = True
        _icmp_error(ctx, rid, in_port, DEST_UNREACH, FRAG_NEEDED, f"ICMP fragmentation needed (MTU {mtu})", mtu)
        ctx.step(rid, "router", Stage.ROUTER_ROUTING, f"{length} bytes with DF over MTU {mtu}: drop")
        raise ctx.finish(Verdict.DROP, Reason.FRAGMENTATION_NEEDED)


def _route(ctx: Context, rid: str) -> Route | None:
    routes = ctx.topology.routes.get(rid, [])
    ctx.tags.add(f"routes:{rid}")
    dst = ctx.match.get("ip_dst")
    src: int | None = None
    best: list[Route] = []
    for route in routes:
        if best and route.dst_len < best[0].dst_len:
            break
        if dst & route.dst_mask != route.dst:
            continue
        if route.src_len:
            if src is None:
                src = ctx.match.get("ip_src")
            if src & route.src_mask != route.src:
                continue
        if best and (route.src_len, route.weight) != (best[0].src_len, best[0].weight):
            continue  # sorted: a more specific source, then a lower weight, came first
        best.append(route)
    if len(best) > 1:  # ECMP: each flow on one next hop, by a consistent hash of its 5-tuple
        flow = five_tuple(ctx) or (ctx.match.get("ip_src"), dst)
        return best[rendezvous(flow, [route.path for route in best])]
    return best[0] if best else None


def _local(ctx: Context, rid: str, in_port: Obj) -> None:
    match = ctx.match
    if match.get("ip_proto") == PROTO_ICMP and match.get("icmp_type") == ECHO_REQUEST:
        ctx.generated.append(
            Generated(in_port["id"], replies.icmp_echo_reply(match, ctx.frame, in_port["port_mac"]), "ICMP echo reply")
        )
        ctx.step(rid, "router", Stage.ROUTER_LOCAL, f"echo request to {int_to_ip(match.peek('ip_dst'))}: reply")
        raise ctx.finish(Verdict.REPLY, Reason.ICMP_ECHO_REPLY)
    ctx.step(rid, "router", Stage.ROUTER_LOCAL, "addressed to the router and not an echo request: drop")
    raise ctx.finish(Verdict.DROP, Reason.LOCAL_NOT_HANDLED)


def _arp(ctx: Context, rid: str, port: Obj) -> None:
    """Answer requests for this port's address (from inside its subnet); learn from replies and gratuitous ARP."""
    match = ctx.match
    op, spa, tpa, sha = match.get("arp_op"), match.get("arp_spa"), match.get("arp_tpa"), match.get("arp_sha")
    own = ip_to_int(port["port_address"])
    if not _in_port_subnet(port, spa):
        ctx.step(rid, "router", Stage.ROUTER_ARP, f"ARP from {int_to_ip(spa)}, outside {port['network_cidr']}: drop")
        raise ctx.finish(Verdict.DROP, Reason.ARP_NOT_IN_SUBNET)
    if op == REQUEST and tpa == own:
        ctx.learn_writes.append(LearnWrite("arp", (rid, spa), sha))
        ctx.generated.append(
            Generated(
                port["id"],
                replies.arp_reply(match, port["port_mac"]),
                f"ARP reply {port['port_address']} is-at {port['port_mac']}",
            )
        )
        ctx.step(rid, "router", Stage.ROUTER_ARP, f"ARP request for {port['port_address']}: reply")
        raise ctx.finish(Verdict.REPLY, Reason.ARP_REPLY)
    if (op == REPLY and tpa == own) or spa == tpa:
        ctx.learn_writes.append(LearnWrite("arp", (rid, spa), sha))
        ctx.step(rid, "router", Stage.ROUTER_ARP, f"learn {int_to_ip(spa)} is-at {sha}")
        raise ctx.finish(Verdict.CONSUME, Reason.ARP_LEARNED)
    ctx.step(rid, "router", Stage.ROUTER_ARP, "ARP not for this port: drop")
    raise ctx.finish(Verdict.DROP, Reason.ARP_NOT_FOR_US)


def _next_hop(ctx: Context, rid: str, route: Route, out_port: PortView) -> None:
    match = ctx.match
    snap = ctx.topology
    peer = out_port.peer
    if peer is not None and peer["type"] == "router":
        mac = peer["port_mac"]
    else:
        hop = route.next_hop_gateway or match.peek("ip_dst")
        ctx.tags.add(f"arp:{rid}/{hop}")
        mac = ctx.learned.arp_mac(rid, hop)
        if mac is None and peer is not None:
            # The peer bridge may know the address statically (a DHCP host entry, another router's port):
            # declared data, so no ARP round trip is needed.
            mac = snap.arp_suppression.get(peer["device_id"], {}).get(hop)
        if mac is None:
            request = replies.arp_request(out_port["port_mac"], ip_to_int(out_port["port_address"]), hop)
            ctx.generated.append(Generated(out_port["id"], request, f"ARP request who-has {int_to_ip(hop)}"))
            ctx.park_until = ("arp", rid, int_to_ip(hop))
            ctx.step(rid, "router", Stage.ROUTER_NEXT_HOP, f"next hop {int_to_ip(hop)} unknown: ARP, wait")
            raise ctx.finish(Verdict.PARK, Reason.WAITING_FOR_ARP)
    match.set("eth_src", out_port["port_mac"])
    match.set("eth_dst", mac)
    if ctx.tracing:
        ctx.step(rid, "router", Stage.ROUTER_NEXT_HOP, f"next hop MAC {mac}")
