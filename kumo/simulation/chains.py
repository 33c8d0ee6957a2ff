"""Rule chains: every rule type and condition of API.md, jumps and returns, the visited-chain guard.

Rules are compiled once per snapshot into lists of small predicates; each predicate reads the packet
through FlowMatch, so a flow's wildcard holds exactly the fields some rule looked at.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kumo.packet.flowmatch import BIT, INDEX
from kumo.packet.ipv4 import PROTO_ICMP
from kumo.simulation import conntrack, nat
from kumo.simulation.context import Context
from kumo.simulation.view import NatTarget, Snapshot, cidr_to_int, prefix_mask

Predicate = Callable[[Context], bool]


class ChainVerdict(enum.Enum):
    ACCEPT = "accept"
    DROP = "drop"
    REJECT = "reject"
    RETURN = "return"  # fell off the end or returned: the caller goes on (at top level: accept)


_TERMINAL = {"accept": ChainVerdict.ACCEPT, "drop": ChainVerdict.DROP, "reject": ChainVerdict.REJECT}


@dataclass(slots=True)
class CompiledRule:
    id: str
    type: str
    matches: Predicate  # all conditions, `inv` applied
    jump_chain_id: str | None
    nat_targets: list[NatTarget]
    flow_action: str
    uses_conntrack: bool
    source: str  # the generated predicate, for debugging and tests
    requirements: list[tuple[list[str], str]]  # (statements, test) in order; see _Gen
    env: dict[str, Any]
    inv: bool
    tag: str = ""  # "rule:<id>"

    def __post_init__(self) -> None:
        self.tag = f"rule:{self.id}"


@dataclass(slots=True)
class CompiledChain:
    """A chain's rules and one generated function that finds the first matching rule from a position."""

    rules: list[CompiledRule]
    first_match: Callable[[Context, int], int]  # (ctx, start) -> index of the first matching rule, or -1
    source: str
    tag: str  # "chain:<id>": what a result depending on this chain is tagged with


def _mac_int(mac: str | None) -> int:
    return int(mac.replace(":", ""), 16) if mac else -1


_FRAGMENTS = {"header": ("none", "first"), "nonheader": ("later",), "unfragmented": ("none",)}


class _Gen:
    """Generates a rule's conditions as straight-line Python. Each condition is a requirement: statements
    (marking the fields it reads in FlowMatch.seen, just before reading them) and a test; evaluation stops at
    the first failing test, so a flow's wildcard holds exactly what the rules looked at. Constants travel in
    the function's namespace under names unique to the rule (`prefix`)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.pending: list[str] = []
        self.requirements: list[tuple[list[str], str]] = []
        self.marked: set[str] = set()  # fields this rule already marked: marking again adds nothing
        self.env: dict[str, Any] = {"conntrack": conntrack, "_mac_int": _mac_int}

    def const(self, value: Any) -> str:
        name = f"{self.prefix}c{len(self.env)}"
        self.env[name] = value
        return name

    def read(self, field: str) -> str:
        if field not in self.marked:
            self.marked.add(field)
            self.pending.append(f"s |= {BIT[field]}")
        return f"v[{INDEX[field]}]"

    def statement(self, line: str) -> None:
        self.pending.append(line)

    def require(self, expr: str, inv: bool = False) -> None:
        """The rule fails unless `expr` (negated by the condition's own inv flag) holds."""
        self.requirements.append((self.pending, f"not ({expr})" if inv else f"({expr})"))
        self.pending = []

    def build(self, rule_inv: bool) -> tuple[Predicate, str]:
        # Marks gather in the local `s` (cheap) and reach FlowMatch.seen once, at whichever exit is taken.
        body = ["m = ctx.match", "v = m._v", "s = 0"]
        for statements, test in self.requirements:
            body += [*statements, f"if not {test}:", "    m.seen |= s", "    return False"]
        body += ["m.seen |= s", "return True"]
        source = "def _conds(ctx):\n" + "\n".join(f"    {line}" for line in body) + "\n"
        if rule_inv:
            source += "def _rule(ctx):\n    return not _conds(ctx)\n"
        else:
            source += "_rule = _conds\n"
        env = dict(self.env)
        exec(compile(source, "<rule>", "exec"), env)
        return env["_rule"], source


def compile_chain_function(rules: list[CompiledRule]) -> tuple[Callable[[Context, int], int], str]:
    """One function for the whole chain: rule after rule as nested ifs, no call per rule; the index of the
    first matching rule at or after `start`, or -1. Seen-field marks gather in a local and are stored at the
    exit. Rules with a whole `inv` call their own predicate (the nesting cannot express "not all of")."""
    env: dict[str, Any] = {}
    for i, rule in enumerate(rules):
        env.update(rule.env)
        if rule.inv:
            env[f"_rule{i}"] = rule.matches

    def body(resumable: bool) -> list[str]:
        lines = ["    m = ctx.match", "    v = m._v", "    s = 0"]
        for i, rule in enumerate(rules):
            indent = "    "
            if resumable:
                lines.append(f"    if start <= {i}:")
                indent = "        "
            if rule.inv:
                lines.append(f"{indent}m.seen |= s")
                lines.append(f"{indent}if _rule{i}(ctx): return {i}")
                continue
            for statements, test in rule.requirements:
                lines += [indent + st for st in statements]
                lines.append(f"{indent}if {test}:")
                indent += "    "
            lines += [f"{indent}m.seen |= s", f"{indent}return {i}"]
        return [*lines, "    m.seen |= s", "    return -1"]

    source = (
        "\n".join(
            [
                "def _from(ctx, start):",
                *body(True),
                "def _first(ctx, start):",
                "    if start:",
                "        return _from(ctx, start)",
                *body(False),
            ]
        )
        + "\n"
    )
    exec(compile(source, "<chain>", "exec"), env)
    return env["_first"], source


def compile_rule(rule: dict[str, Any], snap: Snapshot, prefix: str = "r") -> CompiledRule:
    g = _Gen(prefix)
    if rule.get("in_port_ids"):
        g.require(f"ctx.ingress_port in {g.const(frozenset(rule['in_port_ids']))}", rule.get("inv_in_ports", False))
    if rule.get("out_port_ids"):
        g.require(f"ctx.egress_port in {g.const(frozenset(rule['out_port_ids']))}", rule.get("inv_out_ports", False))
    if rule.get("port_group_id"):
        members = g.const(snap.port_groups.get(rule["port_group_id"], frozenset()))
        g.require(f"ctx.ingress_port in {members}", rule.get("inv_port_group", False))
    for side in ("src", "dst"):
        group = rule.get(f"ip_addr_group_{side}")
        if group:
            addresses = g.const(snap.ip_groups.get(group, frozenset()))
            g.require(f"{g.read(f'ip_{side}')} in {addresses}", rule.get(f"inv_ip_addr_group_{side}", False))
    if rule.get("dl_type") is not None:
        g.require(f"{g.read('eth_type')} == {int(rule['dl_type'])}", rule.get("inv_dl_type", False))
    for side in ("src", "dst"):
        mac = rule.get(f"dl_{side}")
        if mac:
            mask = rule.get(f"dl_{side}_mask")
            value = g.read(f"eth_{side}")
            if mask is None or mask == "ff:ff:ff:ff:ff:ff":
                g.require(f"{value} == {g.const(mac)}", rule.get(f"inv_dl_{side}", False))
            else:
                m = _mac_int(mask)
                g.require(f"_mac_int({value}) & {m} == {_mac_int(mac) & m}", rule.get(f"inv_dl_{side}", False))
    if rule.get("nw_tos") is not None:
        g.require(f"{g.read('ip_tos')} == {int(rule['nw_tos'])}")
    if rule.get("nw_proto") is not None:
        g.require(f"{g.read('ip_proto')} == {int(rule['nw_proto'])}", rule.get("inv_nw_proto", False))
    for side in ("src", "dst"):
        cidr = rule.get(f"nw_{side}")
        if cidr:
            net, length = cidr_to_int(cidr)
            value = g.read(f"ip_{side}")
            g.require(
                f"{value} is not None and {value} & {prefix_mask(length)} == {net}", rule.get(f"inv_nw_{side}", False)
            )
        bounds = rule.get(f"tp_{side}")
        if bounds:
            # API.md: for ICMP, tp_src matches the type and tp_dst the code
            icmp_field, tp_field = ("icmp_type", "tp_src") if side == "src" else ("icmp_code", "tp_dst")
            proto = g.read("ip_proto")
            icmp = f"{proto} == {PROTO_ICMP}"
            g.statement(f"s |= {BIT[icmp_field]} if {icmp} else {BIT[tp_field]}")
            g.statement(f"x_{side} = v[{INDEX[icmp_field]}] if {icmp} else v[{INDEX[tp_field]}]")
            g.require(
                f"x_{side} is not None and {int(bounds['start'])} <= x_{side} <= {int(bounds['end'])}",
                rule.get(f"inv_tp_{side}", False),
            )
    has_l4 = bool(rule.get("tp_src") or rule.get("tp_dst"))
    policy = rule.get("fragment_policy") or ("header" if has_l4 else "any")
    if policy != "any":
        g.require(f"{g.read('fragment')} in {g.const(_FRAGMENTS[policy])}")
    if rule.get("traversed_device"):
        g.require(f"{g.const(rule['traversed_device'])} in ctx.traversed")
    if rule.get("match_return_flow"):
        g.require("conntrack.is_return_flow(ctx, ctx.device)")
    if rule.get("match_forward_flow"):
        g.require("not conntrack.is_return_flow(ctx, ctx.device)")
    predicate, source = g.build(bool(rule.get("inv")))
    return CompiledRule(
        rule["id"],
        rule["type"],
        predicate,
        rule.get("jump_chain_id"),
        [NatTarget.from_obj(t) for t in rule.get("nat_targets") or []],
        rule.get("flow_action") or "accept",
        bool(rule.get("match_forward_flow") or rule.get("match_return_flow")),
        source,
        g.requirements,
        g.env,
        bool(rule.get("inv")),
    )


def compiled_chain(snap: Snapshot, chain_id: str) -> CompiledChain:
    chain = snap.compiled_chains.get(chain_id)
    if chain is None:
        rule_ids = snap.chains.get(chain_id, {}).get("rule_ids", [])
        rules = [compile_rule(snap.rules[r], snap, f"r{i}_") for i, r in enumerate(rule_ids) if r in snap.rules]
        first, source = compile_chain_function(rules)
        chain = CompiledChain(rules, first, source, f"chain:{chain_id}")
        snap.compiled_chains[chain_id] = chain
    return chain  # type: ignore[no-any-return]


def chain_uses_conntrack(snap: Snapshot, chain_id: str, seen: frozenset[str] = frozenset()) -> bool:
    if chain_id in seen:
        return False
    for rule in compiled_chain(snap, chain_id).rules:
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
        if ctx.tracing:
            ctx.step(owner_id, owner_type, stage, f"{chain_id}: no rule decided, accept", chain_id)
        return ChainVerdict.ACCEPT
    return verdict


def _evaluate(
    ctx: Context, chain_id: str, owner_id: str, owner_type: str, stage: str, visited: tuple[str, ...]
) -> ChainVerdict:
    chain = ctx.topology.compiled_chains.get(chain_id) or compiled_chain(ctx.topology, chain_id)
    ctx.tags.add(chain.tag)  # a rule's change is announced with its chain's tag
    tracing = ctx.tracing
    index = -1
    while True:
        index = chain.first_match(ctx, index + 1)
        if index < 0:
            return ChainVerdict.RETURN
        rule = chain.rules[index]
        kind = rule.type
        ctx.tags.add(rule.tag)  # why a flow exists: the rules that decided it (kumo flows shows them)
        terminal = _TERMINAL.get(kind)
        if terminal is not None:
            if tracing:
                ctx.step(owner_id, owner_type, stage, f"rule {kind}", chain_id, rule.id)
            return terminal
        if tracing:

            def say(what: str, rule_id: str = rule.id) -> None:
                ctx.step(owner_id, owner_type, stage, what, chain_id, rule_id)

        else:
            say = _silent
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
        before = ctx.match.changed() if tracing else {}
        if kind == "dnat" or kind == "snat":
            applied = (nat.dnat if kind == "dnat" else nat.snat)(ctx, owner_id, rule.nat_targets)
            if not applied:
                say(f"{kind}: no free address/port in the targets: drop")
                ctx.nat_exhausted = True
                return ChainVerdict.DROP
        else:
            if not nat.reverse(ctx, owner_id, kind):
                say(f"{kind}: no binding, rule does nothing")
                continue
        if tracing:
            say(f"{kind}: {_describe_rewrite(before, ctx.match.changed())}")
        if rule.flow_action == "accept":
            return ChainVerdict.ACCEPT
        if rule.flow_action == "return":
            return ChainVerdict.RETURN


def _silent(what: str, rule_id: str = "") -> None:
    """The hot path's `say`: no trace text is built."""


def _describe_rewrite(before: dict[str, Any], after: dict[str, Any]) -> str:
    from kumo.packet import int_to_ip

    parts = []
    for field, value in after.items():
        if before.get(field) != value:
            shown = int_to_ip(value) if field.startswith("ip_") and isinstance(value, int) else value
            parts.append(f"{field}={shown}")
    return "rewrite " + ", ".join(parts) if parts else "no change"
