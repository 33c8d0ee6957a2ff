"""Rule chains: every rule type and condition of API.md, jumps and returns, the visited-chain guard.

Rules are compiled once per snapshot into lists of small predicates; each predicate reads the packet
through FlowMatch, so a flow's wildcard holds exactly the fields some rule looked at.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kumo.packet.ipv4 import PROTO_ICMP
from kumo.simulation import conntrack, nat
from kumo.simulation.context import Context
from kumo.simulation.view import Snapshot, cidr_to_int, prefix_mask

Predicate = Callable[[Context], bool]


class ChainVerdict(enum.Enum):
    ACCEPT = "accept"
    DROP = "drop"
    REJECT = "reject"
    RETURN = "return"  # fell off the end or returned: the caller goes on (at top level: accept)


@dataclass(slots=True)
class CompiledRule:
    id: str
    type: str
    conditions: list[Predicate]
    inv: bool
    jump_chain_id: str | None
    nat_targets: list[dict[str, Any]]
    flow_action: str
    uses_conntrack: bool

    def matches(self, ctx: Context) -> bool:
        result = all(cond(ctx) for cond in self.conditions)
        return result != self.inv


def _mac_int(mac: str | None) -> int:
    return int(mac.replace(":", ""), 16) if mac else -1


def _negate(pred: Predicate, inv: bool) -> Predicate:
    return (lambda ctx: not pred(ctx)) if inv else pred


def _field_equals(name: str, value: Any) -> Predicate:
    return lambda ctx: ctx.match.get(name) == value


def _in_set(name: str, values: frozenset[int]) -> Predicate:
    return lambda ctx: ctx.match.get(name) in values


def _in_prefix(name: str, cidr: str) -> Predicate:
    net, length = cidr_to_int(cidr)
    mask = prefix_mask(length)

    def pred(ctx: Context) -> bool:
        value = ctx.match.get(name)
        return value is not None and value & mask == net

    return pred


def _in_range(which: str, bounds: dict[str, int]) -> Predicate:
    """tp_src/tp_dst; for ICMP, API.md: type (src) / code (dst)."""
    lo, hi = bounds["start"], bounds["end"]
    icmp_field = "icmp_type" if which == "src" else "icmp_code"

    def pred(ctx: Context) -> bool:
        field = icmp_field if ctx.match.get("ip_proto") == PROTO_ICMP else f"tp_{which}"
        value = ctx.match.get(field)
        return value is not None and lo <= value <= hi

    return pred


def _mac_masked(name: str, mac: str, mask: str | None) -> Predicate:
    m = _mac_int(mask) if mask else 0xFFFFFFFFFFFF
    want = _mac_int(mac) & m
    return lambda ctx: _mac_int(ctx.match.get(name)) & m == want


_FRAGMENTS = {"header": ("none", "first"), "nonheader": ("later",), "unfragmented": ("none",)}


def compile_rule(rule: dict[str, Any], snap: Snapshot) -> CompiledRule:
    conds: list[Predicate] = []
    if rule.get("in_port_ids"):
        ports = frozenset(rule["in_port_ids"])
        conds.append(_negate(lambda ctx: ctx.ingress_port in ports, rule.get("inv_in_ports", False)))
    if rule.get("out_port_ids"):
        outs = frozenset(rule["out_port_ids"])
        conds.append(_negate(lambda ctx: ctx.egress_port in outs, rule.get("inv_out_ports", False)))
    if rule.get("port_group_id"):
        group_id = rule["port_group_id"]
        members = snap.port_groups.get(group_id, frozenset())
        conds.append(_negate(lambda ctx: ctx.ingress_port in members, rule.get("inv_port_group", False)))
    for side in ("src", "dst"):
        group = rule.get(f"ip_addr_group_{side}")
        if group:
            addresses = snap.ip_groups.get(group, frozenset())
            conds.append(_negate(_in_set(f"ip_{side}", addresses), rule.get(f"inv_ip_addr_group_{side}", False)))
    if rule.get("dl_type") is not None:
        conds.append(_negate(_field_equals("eth_type", rule["dl_type"]), rule.get("inv_dl_type", False)))
    for side in ("src", "dst"):
        if rule.get(f"dl_{side}"):
            conds.append(
                _negate(
                    _mac_masked(f"eth_{side}", rule[f"dl_{side}"], rule.get(f"dl_{side}_mask")),
                    rule.get(f"inv_dl_{side}", False),
                )
            )
    if rule.get("nw_tos") is not None:
        conds.append(_field_equals("ip_tos", rule["nw_tos"]))
    if rule.get("nw_proto") is not None:
        conds.append(_negate(_field_equals("ip_proto", rule["nw_proto"]), rule.get("inv_nw_proto", False)))
    for side in ("src", "dst"):
        if rule.get(f"nw_{side}"):
            conds.append(_negate(_in_prefix(f"ip_{side}", rule[f"nw_{side}"]), rule.get(f"inv_nw_{side}", False)))
        if rule.get(f"tp_{side}"):
            conds.append(_negate(_in_range(side, rule[f"tp_{side}"]), rule.get(f"inv_tp_{side}", False)))
    has_l4 = bool(rule.get("tp_src") or rule.get("tp_dst"))
    policy = rule.get("fragment_policy") or ("header" if has_l4 else "any")
    if policy != "any":
        allowed = _FRAGMENTS[policy]
        conds.append(lambda ctx: ctx.match.get("fragment") in allowed)
    if rule.get("traversed_device"):
        device = rule["traversed_device"]
        conds.append(lambda ctx: device in ctx.traversed)
    uses_ct = bool(rule.get("match_forward_flow") or rule.get("match_return_flow"))
    if rule.get("match_return_flow"):
        conds.append(lambda ctx: conntrack.is_return_flow(ctx, ctx.traversed[-1]))
    if rule.get("match_forward_flow"):
        conds.append(lambda ctx: not conntrack.is_return_flow(ctx, ctx.traversed[-1]))
    return CompiledRule(
        rule["id"],
        rule["type"],
        conds,
        bool(rule.get("inv")),
        rule.get("jump_chain_id"),
        list(rule.get("nat_targets") or []),
        rule.get("flow_action") or "accept",
        uses_ct,
    )


def compiled_chain(snap: Snapshot, chain_id: str) -> list[CompiledRule]:
    chain = snap.compiled_chains.get(chain_id)
    if chain is None:
        rule_ids = snap.chains.get(chain_id, {}).get("rule_ids", [])
        chain = [compile_rule(snap.rules[r], snap) for r in rule_ids if r in snap.rules]
        snap.compiled_chains[chain_id] = chain
    return list(chain)


def chain_uses_conntrack(snap: Snapshot, chain_id: str, seen: frozenset[str] = frozenset()) -> bool:
    if chain_id in seen:
        return False
    for rule in compiled_chain(snap, chain_id):
        if rule.uses_conntrack:
            return True
        if rule.jump_chain_id and chain_uses_conntrack(snap, rule.jump_chain_id, seen | {chain_id}):
            return True
    return False


def run_chain(ctx: Context, chain_id: str | None, owner_id: str, owner_type: str, stage: str) -> ChainVerdict:
    """Evaluate a filter chain; the top level turns RETURN (no decision) into ACCEPT."""
    if not chain_id:
        return ChainVerdict.ACCEPT
    verdict = _evaluate(ctx, chain_id, owner_id, owner_type, stage, (chain_id,))
    if verdict is ChainVerdict.RETURN:
        ctx.step(owner_id, owner_type, stage, f"{chain_id}: no rule decided, accept", chain_id)
        return ChainVerdict.ACCEPT
    return verdict


def _evaluate(
    ctx: Context, chain_id: str, owner_id: str, owner_type: str, stage: str, visited: tuple[str, ...]
) -> ChainVerdict:
    ctx.tag(f"chain:{chain_id}")
    for rule in compiled_chain(ctx.topology, chain_id):
        ctx.tag(f"rule:{rule.id}")
        if not rule.matches(ctx):
            continue
        kind = rule.type

        def say(what: str, rule_id: str = rule.id) -> None:
            ctx.step(owner_id, owner_type, stage, what, chain_id, rule_id)

        if kind in ("accept", "drop", "reject"):
            say(f"rule {kind}")
            return ChainVerdict(kind)
        if kind == "return":
            say("rule return")
            return ChainVerdict.RETURN
        if kind == "continue":
            say("rule continue")
            continue
        if kind == "jump":
            target = rule.jump_chain_id or ""
            if target in visited:
                say(f"jump to {target} would loop: drop")
                ctx.chain_loop = True
                return ChainVerdict.DROP
            say(f"jump to {target}")
            verdict = _evaluate(ctx, target, owner_id, owner_type, stage, (*visited, target))
            if verdict is not ChainVerdict.RETURN:
                return verdict
            continue
        before = ctx.match.changed()
        if kind in ("dnat", "snat"):
            applied = (nat.dnat if kind == "dnat" else nat.snat)(ctx, owner_id, rule.nat_targets)
            if not applied:
                say(f"{kind}: no free address/port in the targets: drop")
                ctx.nat_exhausted = True
                return ChainVerdict.DROP
        else:
            if not nat.reverse(ctx, owner_id, kind):
                say(f"{kind}: no binding, rule does nothing")
                continue
        say(f"{kind}: {_describe_rewrite(before, ctx.match.changed())}")
        if rule.flow_action == "accept":
            return ChainVerdict.ACCEPT
        if rule.flow_action == "return":
            return ChainVerdict.RETURN
    return ChainVerdict.RETURN


def _describe_rewrite(before: dict[str, Any], after: dict[str, Any]) -> str:
    from kumo.packet import int_to_ip

    parts = []
    for field, value in after.items():
        if before.get(field) != value:
            shown = int_to_ip(value) if field.startswith("ip_") and isinstance(value, int) else value
            parts.append(f"{field}={shown}")
    return "rewrite " + ", ".join(parts) if parts else "no change"
