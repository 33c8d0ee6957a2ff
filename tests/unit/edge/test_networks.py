"""What a router advertises (kumo.edge.networks): its networks, and its floating IPs when asked."""

from __future__ import annotations

from typing import Any

from kumo.edge.networks import advertised


def rule(rid: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"id": rid, "type": kind, **fields}


def test_networks_and_floating_ips_through_jumps() -> None:
    static = [{"address_from": "10.0.1.11", "address_to": "10.0.1.11", "port_from": 0, "port_to": 0}]
    ports = [{"address_from": "10.0.1.12", "address_to": "10.0.1.12", "port_from": 80, "port_to": 80}]
    rules = {
        "j": rule("j", "jump", jump_chain_id="nat"),
        "f1": rule("f1", "dnat", nw_dst="198.18.0.10/32", nat_targets=static),
        "f2": rule("f2", "dnat", nw_dst="198.18.0.11/32", nat_targets=ports),  # a port forward: not a floating IP
        "f3": rule("f3", "dnat", nw_dst="198.18.0.0/24", nat_targets=static),  # not one address
        "f4": rule("f4", "dnat", nw_dst="198.18.0.12/32", inv_nw_dst=True, nat_targets=static),
        "f5": rule("f5", "dnat", nw_dst="198.18.0.13/32", nat_targets=static),  # in a chain no filter reaches
    }
    chains = {"pre": {"rule_ids": ["j"]}, "nat": {"rule_ids": ["f1", "f2", "f3", "f4"]}, "other": {"rule_ids": ["f5"]}}
    router = {"id": "r1", "inbound_filter_id": "pre", "bgp_advertise_floating_ips": False}
    networks = [{"router_id": "r1", "cidr": "10.0.1.0/24"}, {"router_id": "r2", "cidr": "10.0.2.0/24"}]
    assert advertised(router, networks, chains, rules) == {"10.0.1.0/24"}
    router["bgp_advertise_floating_ips"] = True
    assert advertised(router, networks, chains, rules) == {"10.0.1.0/24", "198.18.0.10/32"}
