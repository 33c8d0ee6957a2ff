from __future__ import annotations

from kumo.packet import ip_to_int
from kumo.packet.frame import parse_frame
from kumo.simulation import Verdict
from kumo.simulation.wildcard import WildcardTable
from tests.unit.simulation.conftest import VM1_MAC, VM2_MAC, VM3_MAC, Cloud, arp_request, tcp_frame


def test_l2_flows_differing_only_in_unread_fields_share_an_entry(cloud: Cloud) -> None:
    cloud.learned.macs[(cloud["web"], VM2_MAC, None)] = cloud["vm2"]
    table = WildcardTable()
    first = cloud.send("vm1", tcp_frame(VM1_MAC, VM2_MAC, "10.0.1.11", "10.0.1.12", 1000, 80))
    assert table.insert(first)
    other_ports = parse_frame(tcp_frame(VM1_MAC, VM2_MAC, "10.0.1.11", "10.0.1.12", 5555, 443), cloud["vm1"])
    assert table.lookup(other_ports) is first
    other_dst = parse_frame(tcp_frame(VM1_MAC, VM3_MAC, "10.0.1.11", "10.0.1.12", 1000, 80), cloud["vm1"])
    assert table.lookup(other_dst) is None
    assert (table.hits, table.misses) == (1, 1)


def test_entries_go_when_what_they_depended_on_changes(cloud: Cloud) -> None:
    cloud.learned.macs[(cloud["web"], VM2_MAC, None)] = cloud["vm2"]
    rmac = cloud.obj("ports", "rtr-web")["port_mac"]
    cloud.learned.arps[(cloud["rtr"], ip_to_int("10.0.2.13"))] = VM3_MAC
    table = WildcardTable()
    l2 = cloud.send("vm1", tcp_frame(VM1_MAC, VM2_MAC, "10.0.1.11", "10.0.1.12", 1, 2))
    routed = cloud.send("vm1", tcp_frame(VM1_MAC, rmac, "10.0.1.11", "10.0.2.13", 1, 2))
    assert routed.verdict in (Verdict.OUTPUT, Verdict.FLOOD)
    table.insert(l2)
    table.insert(routed)
    assert len(table) == 2 and table.masks == 2
    assert table.invalidate(f"routes:{cloud['rtr']}") == 1  # a route change touches only routed flows
    assert (
        len(table) == 1
        and table.lookup(parse_frame(tcp_frame(VM1_MAC, VM2_MAC, "10.0.1.11", "10.0.1.12", 1, 2), cloud["vm1"])) is l2
    )
    assert table.invalidate(f"mac:{cloud['web']}/{VM2_MAC}/None") == 1
    assert len(table) == 0 and table.masks == 0


def test_holds_tells_whether_a_result_is_still_its_matchs_entry(cloud: Cloud) -> None:
    """(What the agent asks before serving a result it found again by the kernel's key.)"""
    cloud.learned.macs[(cloud["web"], VM2_MAC, None)] = cloud["vm2"]
    table = WildcardTable()
    first = cloud.send("vm1", tcp_frame(VM1_MAC, VM2_MAC, "10.0.1.11", "10.0.1.12", 1000, 80))
    assert not table.holds(first)
    table.insert(first)
    assert table.holds(first)
    again = cloud.send("vm1", tcp_frame(VM1_MAC, VM2_MAC, "10.0.1.11", "10.0.1.12", 1000, 80))
    table.insert(again)  # the same match, simulated again: the new result replaces the old
    assert table.holds(again) and not table.holds(first)
    table.invalidate(f"mac:{cloud['web']}/{VM2_MAC}/None")
    assert not table.holds(again)


def test_one_packet_answers_are_not_kept_and_the_table_is_bounded(cloud: Cloud) -> None:
    table = WildcardTable(max_entries=3)
    assert not table.insert(cloud.send("vm1", arp_request(VM1_MAC, "10.0.1.11", "10.0.1.1")))
    for n in range(5):
        mac = f"02:00:00:00:01:{n:02x}"
        table.insert(cloud.send("vm1", tcp_frame(mac, VM2_MAC, "10.0.1.11", "10.0.1.12", 1, 2)))
    assert len(table) == 3
