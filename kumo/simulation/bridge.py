"""A bridge: filters, source checks, VLANs, MAC learning, ARP suppression, DHCP, L2 forwarding."""

from __future__ import annotations

from kumo.packet import int_to_ip, is_multicast_mac
from kumo.packet.arp import REQUEST
from kumo.simulation import dhcp, replies
from kumo.simulation.context import Context
from kumo.simulation.pipeline import Stage
from kumo.simulation.ports import filter_or_drop, outbound_filter
from kumo.simulation.result import Generated, LearnWrite, Reason, Verdict
from kumo.simulation.view import DeviceView, PortView


def process(ctx: Context, bridge: DeviceView, in_port: PortView) -> tuple[str, list[PortView]]:
    """("unicast", [port]) or ("flood", ports): where the frame leaves this bridge (before egress filters)."""
    bid = bridge["id"]
    snap = ctx.topology
    match = ctx.match
    ctx.tags.add(bridge.tag)
    if not bridge.up:
        ctx.step(bid, "bridge", Stage.BRIDGE_ADMIN, "bridge is administratively down: drop")
        raise ctx.finish(Verdict.DROP, Reason.DEVICE_ADMIN_DOWN)
    filter_or_drop(ctx, bridge.inbound, bid, "bridge", Stage.BRIDGE_INBOUND_FILTER)

    src = match.get("eth_src")
    if is_multicast_mac(src):
        ctx.step(bid, "bridge", Stage.BRIDGE_SOURCE_CHECK, f"source MAC {src} is multicast: drop")
        raise ctx.finish(Verdict.DROP, Reason.MULTICAST_SOURCE_MAC)

    if in_port.vlan is not None:  # from a VLAN-tagged interior link: tag with that port's VLAN
        match.set("vlan", in_port.vlan)
        ctx.step(bid, "bridge", Stage.BRIDGE_VLAN, f"push VLAN {in_port.vlan} (from its tagged port)")
    vlan = match.get("vlan")

    router_macs = snap.router_macs.get(bid)
    if router_macs and router_macs.get(src) == in_port["id"]:
        pass  # a linked router port's MAC: declared, nothing to learn
    elif ctx.learned.mac_port(bid, src, vlan) != in_port["id"]:
        ctx.learn_writes.append(LearnWrite("mac", (bid, src, vlan), in_port["id"]))
        if ctx.tracing:
            ctx.step(bid, "bridge", Stage.BRIDGE_MAC_LEARNING, f"learn {src} on {in_port['id']}")

    suppress = snap.arp_suppression.get(bid)
    if suppress and match.get("eth_type") == 0x0806 and match.get("arp_op") == REQUEST:
        target = match.get("arp_tpa")
        answer = suppress.get(target)
        if answer is not None:
            ctx.generated.append(
                Generated(
                    in_port["id"], replies.arp_reply(match, answer), f"ARP reply {int_to_ip(target)} is-at {answer}"
                )
            )
            ctx.step(bid, "bridge", Stage.BRIDGE_ARP_SUPPRESSION, f"answer ARP for {int_to_ip(target)}: {answer}")
            raise ctx.finish(Verdict.REPLY, Reason.ARP_SUPPRESSED)

    hosts = snap.dhcp.get(bid)
    if hosts and match.get("eth_type") == 0x0800 and dhcp.is_dhcp_request(match.get("ip_proto"), match.get("tp_dst")):
        entry = hosts.get(src)
        if entry is None:
            ctx.step(bid, "bridge", Stage.BRIDGE_DHCP, f"no DHCP host entry for {src}: forward the request")
        elif ctx.frame is None:
            ctx.step(bid, "bridge", Stage.BRIDGE_DHCP, "DHCP request (a trace has no message to answer)")
            raise ctx.finish(Verdict.REPLY, Reason.DHCP_REPLY)
        else:
            answered = dhcp.reply(ctx.frame, *entry)
            if answered is not None:
                frame, what = answered
                ctx.generated.append(Generated(in_port["id"], frame, what))
                ctx.step(bid, "bridge", Stage.BRIDGE_DHCP, what)
                raise ctx.finish(Verdict.REPLY, Reason.DHCP_REPLY)

    dst = match.get("eth_dst")
    if is_multicast_mac(dst):
        return _flood(ctx, bid, in_port, vlan, f"{dst} is broadcast/multicast: flood")
    router_side = router_macs.get(dst) if router_macs else None
    if router_side is not None:
        if ctx.tracing:
            ctx.step(bid, "bridge", Stage.BRIDGE_FORWARD, f"{dst} is a linked router port: to {router_side}")
        return "unicast", [snap.ports[router_side]]
    ctx.tags.add(f"mac:{bid}/{dst}/{vlan}")
    out = ctx.learned.mac_port(bid, dst, vlan)
    if out is None or out not in snap.ports:
        return _flood(ctx, bid, in_port, vlan, f"{dst} is unknown: flood")
    if out == in_port["id"]:
        ctx.step(bid, "bridge", Stage.BRIDGE_FORWARD, f"{dst} is behind the ingress port: drop")
        raise ctx.finish(Verdict.DROP, Reason.HAIRPIN)
    if ctx.tracing:
        ctx.step(bid, "bridge", Stage.BRIDGE_FORWARD, f"{dst} is on {out}")
    return "unicast", [snap.ports[out]]


def _flood(ctx: Context, bid: str, in_port: PortView, vlan: int | None, what: str) -> tuple[str, list[PortView]]:
    """Every port but the ingress: exterior ports, and links to other bridges (a tagged link only for frames
    of its VLAN). Links to routers are left out: a router takes no floods (the bridge answers ARP for it)."""
    if ctx.tracing:
        ctx.step(bid, "bridge", Stage.BRIDGE_FORWARD, what)
    ctx.tags.add(f"flood:{bid}")  # membership of the flood set: any port change on the bridge
    snap = ctx.topology
    targets = []
    for port in snap.device_ports.get(bid, []):
        if port["id"] == in_port["id"]:
            continue
        peer = port.peer
        if peer is not None and peer["type"] == "router":
            continue
        if port.vlan is not None and port.vlan != vlan:
            continue
        targets.append(port)
    return "flood", targets


def egress(ctx: Context, bridge: DeviceView, port: PortView) -> bool:
    """The bridge's outbound filter and VLAN pop for one egress port; False when the frame may not leave."""
    if port.vlan is not None:
        if ctx.match.get("vlan") != port.vlan:
            ctx.step(bridge["id"], "bridge", Stage.BRIDGE_VLAN, f"VLAN differs from port {port['id']}'s: not sent")
            ctx.last_drop = Reason.VLAN_MISMATCH
            return False
        ctx.match.set("vlan", None)
    return outbound_filter(ctx, port["id"], bridge.outbound, bridge["id"], "bridge", Stage.BRIDGE_OUTBOUND_FILTER)
