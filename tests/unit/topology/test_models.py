"""Validation of single resources: field formats, defaults, and each model's own consistency rules."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kumo.topology import models as m


def invalid(model: type[m.Resource], **fields: Any) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate({"id": "x", **fields})
    return str(info.value)


def test_defaults_follow_the_api_contract() -> None:
    bridge = m.Bridge(id="b")
    assert bridge.admin_state_up is True and bridge.inbound_filter_id is None
    route = m.Route(id="r", router_id="rt", dst_cidr="10.0.0.0/8", next_hop_port_id="p")
    assert (route.src_cidr, route.weight, route.type, route.learned) == ("0.0.0.0/0", 100, "normal", False)
    subnet = m.DhcpSubnet(id="s", bridge_id="b", cidr="10.0.0.0/24")
    assert (subnet.mtu, subnet.lease_seconds, subnet.enabled) == (1450, 86400, True)
    peer = m.BgpPeer(id="p", router_id="r", asn=65000, address="192.0.2.1")
    assert (peer.keepalive, peer.hold_time) == (60, 180)
    assert m.PoolMember(id="m", pool_id="p", address="10.0.0.5", protocol_port=80).weight == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.0/24", "10.0.0.0/24"),
        ("10.0.0.5/24", "did you mean 10.0.0.0/24"),
        ("10.0.0.0/33", "prefix"),
        ("fe80::/64", "not an IPv4 CIDR"),
        ("banana", "not an IPv4 CIDR"),
    ],
)
def test_cidrs_are_strict_and_explain_the_fix(value: str, expected: str) -> None:
    if value == expected:
        assert m.BgpNetwork(id="n", router_id="r", cidr=value).cidr == value
    else:
        assert expected in invalid(m.BgpNetwork, router_id="r", cidr=value)


def test_macs_are_normalised_and_checked() -> None:
    host = m.DhcpHost(id="h", subnet_id="s", bridge_id="b", mac="AA-BB-CC-00-11-22", ip_address="10.0.0.2")
    assert host.mac == "aa:bb:cc:00:11:22"
    assert "not a MAC address" in invalid(m.DhcpHost, subnet_id="s", bridge_id="b", mac="aa:bb", ip_address="10.0.0.2")
    assert "multicast" in invalid(
        m.DhcpHost, subnet_id="s", bridge_id="b", mac="01:00:5e:00:00:01", ip_address="10.0.0.2"
    )


def test_router_port_address_must_lie_in_its_network() -> None:
    ok = m.Port(id="p", device_id="r", type="router", port_address="10.0.1.1", network_cidr="10.0.1.0/24")
    assert ok.port_address == "10.0.1.1"
    assert "not inside network_cidr" in invalid(
        m.Port, device_id="r", type="router", port_address="10.0.2.1", network_cidr="10.0.1.0/24"
    )
    assert "network or broadcast" in invalid(
        m.Port, device_id="r", type="router", port_address="10.0.1.255", network_cidr="10.0.1.0/24"
    )
    assert "required on a router port" in invalid(m.Port, device_id="r", type="router")
    assert "router ports only" in invalid(m.Port, device_id="b", type="bridge", port_address="10.0.0.1")
    assert "vlan_id is for bridge ports" in invalid(
        m.Port, device_id="r", type="router", port_address="10.0.1.1", network_cidr="10.0.1.0/24", vlan_id=5
    )
    assert "binding needs both" in invalid(m.Port, device_id="b", type="bridge", host_id="h")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"type": "jump"}, "jump_chain_id is required"),
        ({"type": "jump", "jump_chain_id": "c"}, "cannot jump to itself"),
        ({"type": "drop", "jump_chain_id": "d"}, "only for jump rules"),
        ({"type": "snat"}, "needs at least one target"),
        ({"type": "accept", "flow_action": "accept"}, "only for NAT rules"),
        ({"type": "accept", "match_forward_flow": True, "match_return_flow": True}, "cannot both"),
        ({"type": "drop", "tp_dst": {"start": 90, "end": 80}}, "above end"),
        (
            {"type": "drop", "tp_dst": {"start": 80, "end": 80}, "fragment_policy": "nonheader"},
            "non-first fragments",
        ),
        ({"type": "dnat", "nat_targets": [{"address_from": "10.0.0.9", "address_to": "10.0.0.1"}]}, "above"),
        (
            {
                "type": "dnat",
                "nat_targets": [{"address_from": "10.0.0.1", "address_to": "10.0.0.1", "port_from": 0, "port_to": 5}],
            },
            "0/0 for static NAT",
        ),
        ({"type": "drop", "dl_src_mask": "ff:ff:ff:00:00:00"}, "needs dl_src"),
        ({"type": "explode"}, "Input should be"),
        ({"type": "drop", "nw_proto": 256}, "less than or equal to 255"),
    ],
)
def test_rule_consistency(fields: dict[str, Any], expected: str) -> None:
    assert expected in invalid(m.Rule, chain_id="c", **fields)


def test_rule_defaults_derived_from_conditions() -> None:
    l4 = m.Rule(id="r", chain_id="c", type="drop", tp_dst={"start": 80, "end": 80})
    assert l4.effective_fragment_policy() == "header"
    assert m.Rule(id="r", chain_id="c", type="drop").effective_fragment_policy() == "any"
    assert m.Rule(id="r", chain_id="c", type="rev_snat").effective_flow_action() == "accept"
    assert m.Rule(id="r", chain_id="c", type="drop").effective_flow_action() is None


def test_other_cross_field_rules() -> None:
    assert "not inside cidr" in invalid(m.DhcpSubnet, bridge_id="b", cidr="10.0.0.0/24", gateway="10.1.0.1")
    assert "timeout 9 is longer than delay 5" in invalid(m.HealthMonitor, delay=5, timeout=9)
    assert "at least 3 seconds" in invalid(m.BgpPeer, router_id="r", asn=1, address="10.0.0.1", hold_time=2)
    assert "shorter than hold_time 90: set keepalive too (e.g. 30" in invalid(
        m.BgpPeer, router_id="r", asn=1, address="10.0.0.1", keepalive=90, hold_time=90
    )
    assert m.BgpPeer(id="p", router_id="r", asn=1, address="10.0.0.1", hold_time=9).keepalive == 3
    assert "blackhole route has no next hop" in invalid(
        m.Route, router_id="r", dst_cidr="10.0.0.0/8", type="blackhole", next_hop_port_id="p"
    )
    assert "next_hop_port_id is required" in invalid(m.Route, router_id="r", dst_cidr="10.0.0.0/8")
    assert m.Route(id="r", router_id="r", dst_cidr="10.0.0.0/8", type="reject").next_hop_port_id is None


def test_unknown_fields_and_bad_ids_are_refused() -> None:
    assert "Extra inputs are not permitted" in invalid(m.Bridge, nmae="typo")
    with pytest.raises(ValidationError):
        m.Bridge(id="has space")
    with pytest.raises(ValidationError):
        m.Bridge(id="x" * 65)
