"""The stages of a packet's walk, declared once in the order a packet meets them (OVN's habit).

Trace steps and tests name these stages. A packet enters through a port, then a device; it leaves a device
through a port, which either delivers it (exterior) or hands it to its peer port and that port's device
(interior), until it reaches exterior ports, is consumed, or is dropped.
"""

from __future__ import annotations

import enum


class Stage(enum.StrEnum):
    # a port, as the packet enters the virtual network or a device through it
    PORT_ADMIN = "port.admin"
    PORT_SECURITY = "port.security"
    PORT_INBOUND_FILTER = "port.inbound_filter"
    # a bridge
    BRIDGE_ADMIN = "bridge.admin"
    BRIDGE_INBOUND_FILTER = "bridge.inbound_filter"
    BRIDGE_SOURCE_CHECK = "bridge.source_check"
    BRIDGE_VLAN = "bridge.vlan"
    BRIDGE_MAC_LEARNING = "bridge.mac_learning"
    BRIDGE_ARP_SUPPRESSION = "bridge.arp_suppression"
    BRIDGE_DHCP = "bridge.dhcp"
    BRIDGE_FORWARD = "bridge.forward"
    BRIDGE_OUTBOUND_FILTER = "bridge.outbound_filter"
    # a router
    ROUTER_ADMIN = "router.admin"
    ROUTER_L2_CHECK = "router.l2_check"
    ROUTER_ARP = "router.arp"
    ROUTER_LB_REVERSE = "router.lb_reverse"
    ROUTER_PRE_ROUTING = "router.pre_routing"
    ROUTER_L4LB = "router.l4lb"
    ROUTER_ROUTING = "router.routing"
    ROUTER_LOCAL = "router.local"
    ROUTER_TTL = "router.ttl"
    ROUTER_POST_ROUTING = "router.post_routing"
    ROUTER_NEXT_HOP = "router.next_hop"
    # a port, as the packet leaves a device through it
    PORT_OUTBOUND_FILTER = "port.outbound_filter"
    PORT_DELIVER = "port.deliver"


ORDER: tuple[Stage, ...] = tuple(Stage)
