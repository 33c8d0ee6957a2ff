"""`kumo <resource> list|show|create|set|delete`, generated from the resource registry, plus the verbs
that are not CRUD: `port link|unlink|bind|unbind`, `chain rule add|list|delete`,
`tunnel-zone member add|list|delete`, `bridge mac-table`, `router arp-table`, `pool stats`.

A name is accepted wherever an id is, when it names exactly one object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from kumo.cli import render
from kumo.cli.values import NONE_WORDS, field_shape, parse_scalar
from kumo.client import ApiError, Client
from kumo.topology.indexes import FILTER_FIELDS
from kumo.topology.resources import SPECS, Ref, Spec, path_params

Obj = dict[str, Any]


def cli_name(kind: str) -> str:
    return SPECS[kind].singular.lower().replace(" ", "-").replace("ip-address-group", "ip-addr-group")


class Ctx:
    """What every leaf command needs: the client and the output mode."""

    def __init__(self, api: str | None, as_json: bool, token: str | None = None) -> None:
        self.client = Client(api, token=token)
        self.as_json = as_json


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--json", "as_json", is_flag=True, default=None, help="Print JSON instead of tables.")(fn)
    fn = click.option("--api", "api", default=None, metavar="URL", help="API server (env KUMO_API).")(fn)
    return fn


def make_ctx(api: str | None, as_json: bool | None) -> Ctx:
    root = click.get_current_context().find_root()
    defaults = root.obj or {}
    as_json = bool(as_json if as_json is not None else defaults.get("json"))
    return Ctx(api or defaults.get("api"), as_json, defaults.get("token"))


# --- name resolution ---------------------------------------------------------------------------------------
def resolve(client: Client, kinds: tuple[str, ...], token: str, *, must_exist: bool = True) -> str:
    """An id for `token`: the id itself, or the one object of these kinds with that name."""
    matches: list[tuple[str, str]] = []
    for kind in kinds:
        spec = SPECS[kind]
        if spec.parent is not None:
            return token  # nested kinds are addressed by id
        try:
            client.collection(kind).get(token)
            return token
        except ApiError as exc:
            if exc.status != 404:
                raise
        if "name" in spec.model.model_fields:
            matches += [(kind, o["id"]) for o in client.collection(kind).list(name=token)]
    if len(matches) == 1:
        return matches[0][1]
    what = " or ".join(SPECS[k].singular for k in kinds)
    if len(matches) > 1:
        ids = ", ".join(i for _, i in matches)
        raise ApiError(400, "ambiguous_name", f"{len(matches)} {what}s are named {token!r} ({ids}); use an id")
    if not must_exist:
        return token
    raise ApiError(
        404, "not_found", f"no {what} with id or name {token!r}; `kumo {cli_name(kinds[0])} list` shows them"
    )


def _refs(spec: Spec) -> dict[str, Ref]:
    refs = {r.field: r for r in spec.refs}
    if spec.parent and spec.parent_field and spec.parent_field not in refs:
        refs[spec.parent_field] = Ref(spec.parent_field, (spec.parent,), "cascade")
    return refs


# --- per-field options ---------------------------------------------------------------------------------------
_FORMS = {
    "PortRange": "80 or 80-90",
    "NatTarget": "ADDR[-ADDR][:PORT-PORT], or JSON",
    "DhcpRoute": "DESTINATION,GATEWAY",
    "DhcpOption": "CODE=VALUE",
}


def field_options(spec: Spec, fields: list[str], *, for_update: bool) -> list[click.Option]:
    options = []
    refs = _refs(spec)
    for fname in fields:
        info = spec.model.model_fields[fname]
        shape, item, nullable = field_shape(info.annotation)
        names = [f"--{fname.replace('_', '-')}"]
        if fname in refs and fname.endswith("_id") and not refs[fname].many:
            names.append(f"--{fname[:-3].replace('_', '-')}")  # --device for --device-id
        hints: list[str] = []
        metavar = {"bool": "true|false", "int": "N"}.get(shape, "TEXT")
        if fname in refs:
            hints.append(f"{' or '.join(SPECS[k].singular for k in refs[fname].kinds)} (id or name)")
        if shape == "choice":
            metavar = "|".join(str(c) for c in item)
        item_type = item if shape in ("list", "model") else None
        if isinstance(item_type, type) and item_type.__name__ in _FORMS:
            hints.append(_FORMS[item_type.__name__])
        if shape == "list":
            hints.append("repeat for more" + (", or separate with commas" if item is str else ""))
        if not info.is_required() and info.default not in (None, [], False) and not for_update:
            hints.append(f"default {info.default}")
        if for_update and (nullable or shape == "list"):
            hints.append("'none' clears it")
        options.append(
            click.Option(
                [*names, fname],
                multiple=shape == "list",
                default=None,
                show_default=False,
                metavar=metavar,
                help="; ".join(hints) or None,
            )
        )
    return options


def collect_fields(ctx: Ctx, spec: Spec, given: dict[str, Any], *, for_update: bool) -> Obj:
    """Turn the options the operator gave into API fields, names resolved to ids."""
    refs = _refs(spec)
    out: Obj = {}
    for fname, raw in given.items():
        if raw is None or (isinstance(raw, tuple) and not raw):
            continue
        shape, item, nullable = field_shape(spec.model.model_fields[fname].annotation)
        if shape == "list":
            texts = [t for chunk in raw for t in (chunk.split(",") if item is str else [chunk]) if t != ""]
            if len(texts) == 1 and texts[0].lower() in NONE_WORDS:
                out[fname] = []
                continue
            item_shape, item_type, _ = field_shape(item)
            value: Any = [parse_scalar(item_shape, item_type, t) for t in texts]
        elif nullable and isinstance(raw, str) and raw.lower() in NONE_WORDS:
            out[fname] = None
            continue
        else:
            value = parse_scalar(shape, item, raw)
        if fname in refs:
            ref = refs[fname]
            resolve_one = lambda v, r=ref: resolve(ctx.client, r.kinds, v, must_exist=r.must_exist)  # noqa: E731
            value = [resolve_one(v) for v in value] if isinstance(value, list) else resolve_one(value)
        out[fname] = value
    return out


def show_one(ctx: Ctx, obj: Obj | None, title: str) -> None:
    if obj is None:
        return
    if ctx.as_json:
        render.print_json(obj)
    else:
        render.print_object(obj, title=title)


def show_many(ctx: Ctx, spec: Spec, rows: list[Obj], title: str) -> None:
    if ctx.as_json:
        render.print_json(rows)
    else:
        render.print_table(rows, spec.columns, title=f"{title} ({len(rows)})")


# --- the generic verbs -------------------------------------------------------------------------------------
def resource_group(spec: Spec) -> click.Group:
    name = cli_name(spec.kind)
    group = click.Group(name, help=f"Manage {spec.kind.replace('_', ' ')}.")
    coll_kind = spec.kind
    parents = dict(path_params(spec))
    parent_names = list(parents)

    @click.command("list", help=f"List {spec.kind.replace('_', ' ')} (the options filter, on the server).")
    @common_options
    def list_cmd(api: str | None, as_json: bool | None, **parents: str | None) -> None:
        ctx = make_ctx(api, as_json)
        given = {k: v for k, v in parents.items() if v is not None}
        resolved = collect_fields(ctx, spec, given, for_update=False) if given else {}
        for pname in parent_names:
            if pname not in resolved and pname == spec.parent_field:
                raise click.UsageError(f"--{pname.replace('_', '-')} is required to list {spec.kind}")
        show_many(ctx, spec, ctx.client.collection(coll_kind).list(**resolved), spec.kind)

    for pname in parent_names:
        list_cmd.params.append(
            click.Option(
                [f"--{pname.replace('_', '-')}", f"--{pname[:-3].replace('_', '-')}", pname],
                default=None,
                show_default=False,
                metavar="ID",
                help=f"the {parents[pname].singular} (id or name)",
            )
        )
    filters = [f for f in FILTER_FIELDS if f in spec.model.model_fields and f not in parent_names]
    list_cmd.params += field_options(spec, filters, for_update=False)
    group.add_command(list_cmd)

    @click.command("show", help=f"Show one {spec.singular}.")
    @click.argument("ident")
    @common_options
    def show_cmd(ident: str, api: str | None, as_json: bool | None) -> None:
        ctx = make_ctx(api, as_json)
        obj = ctx.client.collection(coll_kind).get(resolve(ctx.client, (coll_kind,), ident))
        show_one(ctx, obj, spec.singular)

    group.add_command(show_cmd)

    if spec.creatable and spec.generic_api:
        create_fields = spec.writable_on_create() + ([spec.parent_field] if spec.parent_field else [])

        @click.command("create", help=f"Create a {spec.singular}.")
        @common_options
        def create_cmd(api: str | None, as_json: bool | None, **given: Any) -> None:
            ctx = make_ctx(api, as_json)
            show_one(
                ctx,
                ctx.client.collection(coll_kind).create(**collect_fields(ctx, spec, given, for_update=False)),
                f"created {spec.singular}",
            )

        create_cmd.params += field_options(spec, create_fields, for_update=False)
        group.add_command(create_cmd)

    if spec.updatable and spec.generic_api:

        @click.command("set", help=f"Change fields of a {spec.singular}.")
        @click.argument("ident")
        @common_options
        def set_cmd(ident: str, api: str | None, as_json: bool | None, **given: Any) -> None:
            ctx = make_ctx(api, as_json)
            fields = collect_fields(ctx, spec, given, for_update=True)
            if not fields:
                raise click.UsageError("nothing to change: give at least one field option (see --help)")
            obj_id = resolve(ctx.client, (coll_kind,), ident)
            show_one(ctx, ctx.client.collection(coll_kind).update(obj_id, **fields), f"updated {spec.singular}")

        set_cmd.params += field_options(spec, spec.writable_on_update(), for_update=True)
        group.add_command(set_cmd)

    if spec.generic_api:

        @click.command("delete", help=f"Delete a {spec.singular}.")
        @click.argument("ident")
        @common_options
        def delete_cmd(ident: str, api: str | None, as_json: bool | None) -> None:
            ctx = make_ctx(api, as_json)
            obj_id = resolve(ctx.client, (coll_kind,), ident)
            ctx.client.collection(coll_kind).delete(obj_id)
            if ctx.as_json:
                render.print_json({"deleted": obj_id})
            else:
                click.echo(f"deleted {spec.singular} {obj_id}")

        group.add_command(delete_cmd)
    return group


# --- verbs beyond CRUD -----------------------------------------------------------------------------------------
def add_port_verbs(group: click.Group) -> None:
    @group.command(
        "link", help="Link two ports (interior): router-bridge, router-router, or bridge-bridge with a VLAN."
    )
    @click.argument("port")
    @click.argument("peer")
    @common_options
    def link(port: str, peer: str, api: str | None, as_json: bool | None) -> None:
        ctx = make_ctx(api, as_json)
        a, b = resolve(ctx.client, ("ports",), port), resolve(ctx.client, ("ports",), peer)
        show_one(ctx, ctx.client.link_ports(a, b), "linked port")

    @group.command("unlink", help="Unlink a port from its peer.")
    @click.argument("port")
    @common_options
    def unlink(port: str, api: str | None, as_json: bool | None) -> None:
        ctx = make_ctx(api, as_json)
        show_one(ctx, ctx.client.unlink_port(resolve(ctx.client, ("ports",), port)), "unlinked port")

    @group.command("bind", help="Bind a port to an interface on a host (exterior).")
    @click.argument("port")
    @click.option("--host", "host", required=True, help="host id or name (may not have registered yet)")
    @click.option("--interface", "interface", required=True, help="interface name on that host, e.g. tap1")
    @common_options
    def bind(port: str, host: str, interface: str, api: str | None, as_json: bool | None) -> None:
        ctx = make_ctx(api, as_json)
        host_id = resolve(ctx.client, ("hosts",), host, must_exist=False)
        show_one(ctx, ctx.client.bind_port(resolve(ctx.client, ("ports",), port), host_id, interface), "bound port")

    @group.command("unbind", help="Remove a port's binding.")
    @click.argument("port")
    @common_options
    def unbind(port: str, api: str | None, as_json: bool | None) -> None:
        ctx = make_ctx(api, as_json)
        show_one(ctx, ctx.client.unbind_port(resolve(ctx.client, ("ports",), port)), "unbound port")


def add_chain_rule_verbs(group: click.Group) -> None:
    rules = SPECS["rules"]
    rule_group = click.Group("rule", help="Rules of a chain, in order.")
    group.add_command(rule_group)

    @click.command("add", help="Add a rule to a chain (appended unless --position is given).")
    @click.argument("chain")
    @common_options
    def add(chain: str, api: str | None, as_json: bool | None, **given: Any) -> None:
        ctx = make_ctx(api, as_json)
        fields = collect_fields(ctx, rules, given, for_update=False)
        fields["chain_id"] = resolve(ctx.client, ("chains",), chain)
        show_one(ctx, ctx.client.rules.create(**fields), "added rule")

    add.params += field_options(rules, rules.writable_on_create(), for_update=False)
    rule_group.add_command(add)

    @rule_group.command("list", help="List a chain's rules in order.")
    @click.argument("chain")
    @common_options
    def list_rules(chain: str, api: str | None, as_json: bool | None) -> None:
        ctx = make_ctx(api, as_json)
        rows = ctx.client.rules.list(chain_id=resolve(ctx.client, ("chains",), chain))
        show_many(ctx, rules, rows, "rules")

    @rule_group.command("delete", help="Delete a rule by id.")
    @click.argument("rule")
    @common_options
    def delete_rule(rule: str, api: str | None, as_json: bool | None) -> None:
        ctx = make_ctx(api, as_json)
        ctx.client.rules.delete(rule)
        click.echo(f"deleted rule {rule}") if not ctx.as_json else render.print_json({"deleted": rule})


def add_member_verbs(group: click.Group) -> None:
    members = SPECS["tunnel_zone_members"]
    member_group = click.Group("member", help="Hosts of a tunnel zone and their underlay addresses.")
    group.add_command(member_group)

    @member_group.command("add", help="Add a host to a tunnel zone (or change its address).")
    @click.argument("zone")
    @click.argument("host")
    @click.option("--ip", "--ip-address", "ip", required=True, help="the host's underlay (tunnel) IP")
    @common_options
    def add(zone: str, host: str, ip: str, api: str | None, as_json: bool | None) -> None:
        ctx = make_ctx(api, as_json)
        zone_id = resolve(ctx.client, ("tunnel_zones",), zone)
        host_id = resolve(ctx.client, ("hosts",), host, must_exist=False)
        show_one(ctx, ctx.client.put_tunnel_zone_member(zone_id, host_id, ip), "tunnel zone member")

    @member_group.command("list", help="List a tunnel zone's members.")
    @click.argument("zone")
    @common_options
    def list_members(zone: str, api: str | None, as_json: bool | None) -> None:
        ctx = make_ctx(api, as_json)
        rows = ctx.client.tunnel_zone_members(resolve(ctx.client, ("tunnel_zones",), zone))
        show_many(ctx, members, rows, "members")

    @member_group.command("delete", help="Remove a host from a tunnel zone.")
    @click.argument("zone")
    @click.argument("host")
    @common_options
    def delete(zone: str, host: str, api: str | None, as_json: bool | None) -> None:
        ctx = make_ctx(api, as_json)
        zone_id = resolve(ctx.client, ("tunnel_zones",), zone)
        host_id = resolve(ctx.client, ("hosts",), host, must_exist=False)
        ctx.client.delete_tunnel_zone_member(zone_id, host_id)
        click.echo(f"removed host {host_id} from tunnel zone {zone_id}")


def add_table_verb(group: click.Group, kind: str, verb: str, columns: tuple[str, ...]) -> None:
    @group.command(verb, help=f"Show the {verb.replace('-', ' ')} learned by a {SPECS[kind].singular}.")
    @click.argument("device")
    @common_options
    def show_table(device: str, api: str | None, as_json: bool | None) -> None:
        ctx = make_ctx(api, as_json)
        device_id = resolve(ctx.client, (kind,), device)
        rows = ctx.client.mac_table(device_id) if kind == "bridges" else ctx.client.arp_table(device_id)
        if ctx.as_json:
            render.print_json(rows)
        else:
            render.print_table(rows, columns, title=f"{verb} ({len(rows)})")


STATS_COLUMNS = (
    "member_id",
    "address",
    "protocol_port",
    "status",
    "active_connections",
    "total_connections",
    "bytes_in",
    "bytes_out",
)


def add_pool_stats_verb(group: click.Group) -> None:
    @group.command("stats", help="Per member: active and total connections and bytes, added up over the agents.")
    @click.argument("pool")
    @common_options
    def stats(pool: str, api: str | None, as_json: bool | None) -> None:
        ctx = make_ctx(api, as_json)
        pool_id = resolve(ctx.client, ("pools",), pool)
        result = ctx.client.pool_stats(pool_id)
        if ctx.as_json:
            render.print_json(result)
            return
        age = "no agent has published any yet" if result["age_s"] is None else f"as of {result['age_s']} s ago"
        hosts = len(result["hosts"])
        render.print_table(result["members"], STATS_COLUMNS, title=f"pool {pool_id}: {hosts} hosts, {age}")


def resource_groups() -> list[click.Group]:
    groups = []
    for kind, spec in SPECS.items():
        group = resource_group(spec)
        if kind == "ports":
            add_port_verbs(group)
        elif kind == "chains":
            add_chain_rule_verbs(group)
        elif kind == "tunnel_zones":
            add_member_verbs(group)
        elif kind == "bridges":
            add_table_verb(group, "bridges", "mac-table", ("mac", "vlan_id", "port_id"))
        elif kind == "routers":
            add_table_verb(group, "routers", "arp-table", ("ip", "mac", "port_id"))
        elif kind == "pools":
            add_pool_stats_verb(group)
        if kind != "tunnel_zone_members":
            groups.append(group)
    return groups
