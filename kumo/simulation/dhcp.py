"""DHCP on exterior bridge ports (RFC 2131), answered by the simulation for static host entries.

DISCOVER -> OFFER, REQUEST -> ACK (or NAK when the client asks for another address). Options: 1 subnet mask,
3 router, 6 DNS, 26 MTU (default 1450: VXLAN's 50 bytes, ARCHITECTURE.md), 28 broadcast, 51 lease time,
54 server id, 121 classless routes (RFC 3442 §3: with 121 present a client ignores option 3, so the default
route goes into 121 too), and the host entry's extra options.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from kumo.packet import BROADCAST_MAC, PacketError, ip_to_int
from kumo.packet import dhcp as d
from kumo.packet.ethernet import ETH_P_IP, Ethernet
from kumo.packet.ipv4 import PROTO_UDP, IPv4
from kumo.packet.udp import Udp

SERVER_MAC = "02:6b:64:68:63:70"  # the DHCP server's own source MAC ("kdhcp"), locally administered


def is_dhcp_request(ip_proto: int | None, tp_dst: int | None) -> bool:
    return ip_proto == PROTO_UDP and tp_dst == d.SERVER_PORT


def _option_value(value: str) -> bytes:
    """Extra options are strings: a list of IPv4 addresses is sent as addresses, anything else as text."""
    try:
        return b"".join(ipaddress.IPv4Address(v.strip()).packed for v in value.split(","))
    except ValueError:
        return value.encode()


def reply(frame: bytes, subnet: dict[str, Any], host: dict[str, Any]) -> tuple[bytes, str] | None:
    """(reply frame, what) for a DHCP DISCOVER or REQUEST in `frame`; None for other messages."""
    try:
        eth = Ethernet.parse(frame)
        ip = IPv4.parse(eth.payload)
        request = d.Dhcp.parse(Udp.parse(ip.payload).payload)
    except PacketError:
        return None
    kind = request.message_type
    if request.op != d.BOOTREQUEST or kind not in (d.DISCOVER, d.REQUEST):
        return None
    net = ipaddress.IPv4Network(subnet["cidr"])
    yiaddr = ip_to_int(host["ip_address"])
    server = subnet.get("server_address") or subnet.get("gateway") or str(net.network_address + 1)
    server_ip = ip_to_int(server)
    answer = d.OFFER if kind == d.DISCOVER else d.ACK
    if kind == d.REQUEST:
        asked = request.option(d.OPT_REQUESTED_IP)
        wanted = int.from_bytes(asked, "big") if asked else request.ciaddr
        if wanted and wanted != yiaddr:
            answer = d.NAK
    options: list[tuple[int, bytes]] = [
        (d.OPT_MESSAGE_TYPE, bytes([answer])),
        (d.OPT_SERVER_ID, server_ip.to_bytes(4, "big")),
    ]
    if answer != d.NAK:
        options += [
            (d.OPT_SUBNET_MASK, net.netmask.packed),
            (d.OPT_LEASE_TIME, int(subnet.get("lease_seconds", 86400)).to_bytes(4, "big")),
            (d.OPT_MTU, int(subnet.get("mtu", 1450)).to_bytes(2, "big")),
            (d.OPT_BROADCAST, net.broadcast_address.packed),
        ]
        routes: list[tuple[int, int, int]] = []
        if subnet.get("gateway"):
            gateway = ip_to_int(subnet["gateway"])
            options.append((d.OPT_ROUTER, gateway.to_bytes(4, "big")))
            routes.append((0, 0, gateway))
        for route in subnet.get("routes") or []:
            dest = ipaddress.IPv4Network(route["destination"])
            routes.append((int(dest.network_address), dest.prefixlen, ip_to_int(route["gateway"])))
        if routes:
            options.append((d.OPT_CLASSLESS_ROUTES, d.classless_routes(routes)))
        if subnet.get("dns_servers"):
            options.append((d.OPT_DNS, b"".join(ipaddress.IPv4Address(a).packed for a in subnet["dns_servers"])))
        if host.get("name"):
            options.append((d.OPT_HOSTNAME, host["name"].encode()))
        options += [(o["code"], _option_value(o["value"])) for o in host.get("extra_options") or []]
    message = d.Dhcp(
        d.BOOTREPLY,
        request.xid,
        request.chaddr,
        yiaddr=0 if answer == d.NAK else yiaddr,
        siaddr=server_ip,
        flags=request.flags,
        options=options,
    )
    # RFC 2131 §4.1: NAKs and clients that set the broadcast bit get broadcasts; others a unicast to the
    # client's hardware address and the offered address (or its current one, when it has one).
    broadcast = answer == d.NAK or bool(request.flags & d.FLAG_BROADCAST)
    dst_ip = 0xFFFFFFFF if broadcast else (request.ciaddr or yiaddr)
    dst_mac = BROADCAST_MAC if broadcast else request.chaddr
    udp = Udp(d.SERVER_PORT, d.CLIENT_PORT, message.build())
    packet = IPv4(server_ip, dst_ip, PROTO_UDP, udp.build(server_ip, dst_ip), ttl=64)
    what = {d.OFFER: "DHCP OFFER", d.ACK: "DHCP ACK", d.NAK: "DHCP NAK"}[answer]
    return Ethernet(dst_mac, SERVER_MAC, ETH_P_IP, packet.build()).build(), f"{what} {host['ip_address']}"
