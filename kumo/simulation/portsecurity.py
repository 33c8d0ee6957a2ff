"""Port security (Neutron's `port_security_enabled`, OVN's `port_security`): what a VM sends through a bridge
port that declares its addresses (`mac_address`, `fixed_ips`, `allowed_address_pairs`) must come from them.

Checked first, as a packet enters the virtual network through such a port:
- every frame's source MAC is the port's `mac_address` or an address pair's MAC;
- an IPv4 packet's (source MAC, source IP) is one the port declares: its MAC with a fixed IP, or an address
  pair (its IP or network, with its MAC or the port's). A DHCP request from 0.0.0.0 (UDP 68 -> 67) from a
  declared MAC passes: the VM has no address yet;
- an ARP packet's sender (hardware, protocol) addresses are the frame's source MAC and an address it may
  use, so that no forged ARP claims a neighbour's IP (an ARP probe, sender IP 0.0.0.0, passes).
Anything else is dropped with a reason that names what was wrong. The result reads exactly the fields it
checked, so the kernel flow it becomes drops (or passes) every later packet with the same addresses without
the agent (docs/megaflows.md). A port with `port_security_enabled: false`, or that declares no address, is
not checked (PortView.security is None).
"""

from __future__ import annotations

from kumo.packet import int_to_ip
from kumo.simulation.context import Context
from kumo.simulation.pipeline import Stage
from kumo.simulation.portaddresses import PortSecurity
from kumo.simulation.result import Reason, Verdict

ETH_IP, ETH_ARP = 0x0800, 0x0806
DHCP_CLIENT, DHCP_SERVER = 68, 67


def check(ctx: Context, port_id: str, security: PortSecurity) -> None:
    """Raise the drop if the entering packet's source addresses are not the port's."""
    match = ctx.match
    mac = str(match.get("eth_src")).lower()
    if security.macs and mac not in security.macs:
        _drop(ctx, port_id, Reason.PORT_SECURITY_MAC, f"source MAC {mac} is not this port's: drop")
    eth_type = match.get("eth_type")
    if eth_type == ETH_IP:
        ip = match.get("ip_src")
        if ip == 0 and _dhcp_request(ctx):
            return
        if not security.allows(mac, ip):
            _drop(ctx, port_id, Reason.PORT_SECURITY_IP, f"source {int_to_ip(ip)} from {mac} is not this port's: drop")
    elif eth_type == ETH_ARP:
        sha, spa = str(match.get("arp_sha")).lower(), match.get("arp_spa")
        if sha != mac or (spa != 0 and not security.allows(sha, spa)):
            what = f"ARP from {mac} claiming {int_to_ip(spa or 0)} at {sha}"
            _drop(ctx, port_id, Reason.PORT_SECURITY_ARP, f"{what}: not this port's addresses, drop")
    if ctx.tracing:
        ctx.step(port_id, "port", Stage.PORT_SECURITY, "source addresses are the port's")


def _dhcp_request(ctx: Context) -> bool:
    match = ctx.match
    return match.get("ip_proto") == 17 and match.get("tp_src") == DHCP_CLIENT and match.get("tp_dst") == DHCP_SERVER


def _drop(ctx: Context, port_id: str, reason: Reason, what: str) -> None:
    ctx.step(port_id, "port", Stage.PORT_SECURITY, what)
    raise ctx.finish(Verdict.DROP, reason)
