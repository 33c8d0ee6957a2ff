"""What a router advertises to its BGP peers: every `bgp_networks` cidr and, when the router asks for it
(`bgp_advertise_floating_ips`), each floating IP as a /32 — so that a floating IP follows the uplinks that
are up, without a static route upstream.

A floating IP is the address of a static (1:1) DNAT rule: a `dnat` rule whose match is one destination
address (`nw_dst` a /32, not inverted) and whose targets are all static (ports 0/0), in a chain the router's
filters reach (its inbound and outbound chains and the chains they jump to)."""

from __future__ import annotations

from collections.abc import Iterable

from kumo.topology.store.base import Obj


def advertised(router: Obj, networks: Iterable[Obj], chains: dict[str, Obj], rules: dict[str, Obj]) -> set[str]:
    out = {n["cidr"] for n in networks if n["router_id"] == router["id"]}
    if router.get("bgp_advertise_floating_ips"):
        out |= {f"{address}/32" for address in floating_ips(router, chains, rules)}
    return out


def floating_ips(router: Obj, chains: dict[str, Obj], rules: dict[str, Obj]) -> set[str]:
    found: set[str] = set()
    seen: set[str] = set()
    pending = [c for c in (router.get("inbound_filter_id"), router.get("outbound_filter_id")) if c]
    while pending:
        chain_id = pending.pop()
        if chain_id in seen or chain_id not in chains:
            continue
        seen.add(chain_id)
        for rule_id in chains[chain_id].get("rule_ids", []):
            rule = rules.get(rule_id)
            if rule is None:
                continue
            if rule["type"] == "jump" and rule.get("jump_chain_id"):
                pending.append(rule["jump_chain_id"])
            elif _static_dnat(rule):
                found.add(rule["nw_dst"].split("/")[0])
    return found


def _static_dnat(rule: Obj) -> bool:
    targets = rule.get("nat_targets") or []
    destination = rule.get("nw_dst") or ""
    return (
        rule["type"] == "dnat"
        and destination.endswith("/32")
        and not rule.get("inv_nw_dst")
        and not rule.get("inv")
        and bool(targets)
        and all(t.get("port_from", 0) == 0 and t.get("port_to", 0) == 0 for t in targets)
    )
