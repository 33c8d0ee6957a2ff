"""Port security: a bridge port that declares its addresses passes only what comes from them (Neutron's
mac_address, fixed_ips, allowed_address_pairs, port_security_enabled)."""

from __future__ import annotations

import pytest

from kumo.packet import ip_to_int
from kumo.packet.arp import REPLY, Arp
from kumo.packet.ethernet import ETH_P_ARP, Ethernet
from kumo.simulation import Reason, Verdict
from kumo.topology.errors import InvalidInput
from tests.unit.simulation.conftest import VM1_MAC, VM2_MAC, Cloud, arp_request, tcp_frame, udp_frame

BROADCAST = "ff:ff:ff:ff:ff:ff"


def declare(cloud: Cloud, **fields: object) -> None:
    cloud.topo.update("ports", cloud["vm1"], {"mac_address": VM1_MAC, "fixed_ips": ["10.0.1.11"], **fields})


def from_vm1(cloud: Cloud, mac: str = VM1_MAC, ip: str = "10.0.1.11") -> tuple[Verdict, Reason]:
    result = cloud.send("vm1", tcp_frame(mac, VM2_MAC, ip, "10.0.1.12", 40000, 80))
    return result.verdict, result.reason


def arp_reply(sender_mac: str, sender_ip: str, frame_mac: str | None = None) -> bytes:
    arp = Arp(REPLY, sender_mac, ip_to_int(sender_ip), VM2_MAC, ip_to_int("10.0.1.12"))
    return Ethernet(VM2_MAC, frame_mac or sender_mac, ETH_P_ARP, arp.build()).build()


def test_a_port_passes_its_own_addresses_and_drops_others(cloud: Cloud) -> None:
    declare(cloud)
    assert from_vm1(cloud)[0] in (Verdict.OUTPUT, Verdict.FLOOD)
    assert from_vm1(cloud, mac="02:00:00:00:00:99") == (Verdict.DROP, Reason.PORT_SECURITY_MAC)
    assert from_vm1(cloud, ip="10.0.1.12") == (Verdict.DROP, Reason.PORT_SECURITY_IP)  # a neighbour's address
    result = cloud.send("vm1", tcp_frame(VM1_MAC, VM2_MAC, "10.0.1.12", "10.0.1.13", 1, 2))
    assert {"eth_src", "ip_src"} <= set(result.match.fields())  # (the kernel flow drops by these fields)


def test_forged_arp_is_dropped_and_honest_arp_passes(cloud: Cloud) -> None:
    declare(cloud)
    forged = cloud.send("vm1", arp_reply(VM1_MAC, "10.0.1.12"))  # "10.0.1.12 is at vm1's MAC"
    assert (forged.verdict, forged.reason) == (Verdict.DROP, Reason.PORT_SECURITY_ARP)
    mismatched = cloud.send("vm1", arp_reply("02:00:00:00:00:99", "10.0.1.11", frame_mac=VM1_MAC))
    assert mismatched.reason is Reason.PORT_SECURITY_ARP
    assert cloud.send("vm1", arp_reply(VM1_MAC, "10.0.1.11")).verdict is not Verdict.DROP
    assert cloud.send("vm1", arp_request(VM1_MAC, "10.0.1.11", "10.0.1.12")).verdict is not Verdict.DROP
    probe = cloud.send("vm1", arp_request(VM1_MAC, "0.0.0.0", "10.0.1.11"))  # RFC 5227: sender 0.0.0.0
    assert probe.reason not in (Reason.PORT_SECURITY_ARP, Reason.PORT_SECURITY_MAC)


def test_dhcp_discovery_from_the_declared_mac_passes(cloud: Cloud) -> None:
    declare(cloud)
    discover = udp_frame(VM1_MAC, BROADCAST, "0.0.0.0", "255.255.255.255", 68, 67, b"\x01")
    assert cloud.send("vm1", discover).reason not in (Reason.PORT_SECURITY_IP, Reason.PORT_SECURITY_MAC)
    other = udp_frame("02:00:00:00:00:99", BROADCAST, "0.0.0.0", "255.255.255.255", 68, 67, b"\x01")
    assert cloud.send("vm1", other).reason is Reason.PORT_SECURITY_MAC
    not_dhcp = udp_frame(VM1_MAC, BROADCAST, "0.0.0.0", "255.255.255.255", 68, 99, b"\x01")
    assert cloud.send("vm1", not_dhcp).reason is Reason.PORT_SECURITY_IP


def test_an_allowed_address_pair_lets_a_shared_address_through(cloud: Cloud) -> None:
    pairs = [{"ip_address": "10.0.1.100"}, {"ip_address": "10.0.1.64/28", "mac_address": "02:00:5e:00:01:01"}]
    declare(cloud, allowed_address_pairs=pairs)
    assert from_vm1(cloud, ip="10.0.1.100")[0] is not Verdict.DROP  # a VRRP-style address, the port's MAC
    assert from_vm1(cloud, mac="02:00:5e:00:01:01", ip="10.0.1.70")[0] is not Verdict.DROP  # with its own MAC
    assert from_vm1(cloud, mac="02:00:5e:00:01:01", ip="10.0.1.11") == (Verdict.DROP, Reason.PORT_SECURITY_IP)
    assert from_vm1(cloud, ip="10.0.1.101") == (Verdict.DROP, Reason.PORT_SECURITY_IP)


def test_port_security_off_or_no_address_declared_is_todays_behaviour(cloud: Cloud) -> None:
    assert from_vm1(cloud, mac="02:00:00:00:00:99", ip="10.0.1.12")[0] is not Verdict.DROP  # nothing declared
    declare(cloud, port_security_enabled=False)
    assert from_vm1(cloud, mac="02:00:00:00:00:99", ip="10.0.1.12")[0] is not Verdict.DROP
    declare(cloud, fixed_ips=[], port_security_enabled=True)  # a MAC alone: only the MAC is checked
    assert from_vm1(cloud, ip="10.0.1.77")[0] is not Verdict.DROP
    assert from_vm1(cloud, mac="02:00:00:00:00:99") == (Verdict.DROP, Reason.PORT_SECURITY_MAC)


def test_bad_declarations_are_refused(cloud: Cloud) -> None:
    for fields in (
        {"mac_address": "01:00:5e:00:00:01"},
        {"fixed_ips": ["10.0.1"]},
        {"allowed_address_pairs": [{"ip_address": "10.0.1.1/24"}]},
        {"allowed_address_pairs": [{"mac_address": VM1_MAC}]},
    ):
        with pytest.raises(InvalidInput):
            cloud.topo.update("ports", cloud["vm1"], fields)
    with pytest.raises(InvalidInput, match="bridge ports"):
        cloud.topo.update("ports", cloud["rtr-web"], {"fixed_ips": ["10.0.1.1"]})
