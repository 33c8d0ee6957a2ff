"""The topology service: every write an operator makes, checked and applied as one store transaction.

It enforces what the models cannot see alone: referenced ids exist; deleting cascades, refuses (409) or
clears references as each reference declares; uniqueness (tunnel keys, MACs, bindings) through claims
written in the same transaction; links and bindings; router ports' automatic routes; rule positions.
Writes are optimistic: a concurrent change to the same objects (another API server) retries the whole
operation, so no half-applied change is ever visible.
"""

from __future__ import annotations

import builtins
import random
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import ValidationError

from kumo.topology.bgp import peer_view
from kumo.topology.deletion import deletion
from kumo.topology.errors import Conflict, InvalidInput, NotFound, VersionConflict
from kumo.topology.lbstatus import member_view
from kumo.topology.resources import CLAIMS_KIND, SPECS, Spec
from kumo.topology.state import HOSTS_ALIVE, learned_routes
from kumo.topology.store.base import Create, Obj, Store, Versioned
from kumo.topology.transaction import Tx

T = TypeVar("T")
MEMBER_NAMESPACE = uuid.UUID("6b756d6f-0000-4000-8000-000000000001")
MASKED = "********"
_ATTEMPTS = 12  # jittered backoff totals at most ~4 s before the conflict reaches the caller


def validation_message(error: ValidationError) -> str:
    """One readable line per problem, each naming its field."""
    parts = []
    for err in error.errors():
        loc = ".".join(str(x) for x in err["loc"] if x not in ("body",))
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def spec_of(kind: str) -> Spec:
    try:
        return SPECS[kind]
    except KeyError:
        raise NotFound(f"unknown resource kind {kind!r}") from None


class Topology:
    """Reads and writes of the declared topology, by resource kind."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.ensure_index()

    # --- reads ---------------------------------------------------------------------------------------
    def get(self, kind: str, obj_id: str) -> Obj:
        spec = spec_of(kind)
        obj = self.store.find(kind, obj_id)
        if obj is None and kind == "routes":
            obj = self._learned_route(obj_id)
        if obj is None:
            raise NotFound(f"no {spec.singular} with id {obj_id}")
        return self._view(kind, obj)

    def list(self, kind: str, **equal: Any) -> list[Obj]:
        spec_of(kind)
        objs = self.store.list(kind, **equal)
        return self._views(kind, objs + self._learned_matching(kind, equal))

    def page(
        self, kind: str, limit: int, marker: str | None = None, **equal: Any
    ) -> tuple[builtins.list[Obj], str | None]:
        """Up to `limit` objects after id `marker`, in id order, and the next page's marker (None: the last);
        reads only what it returns when the filters are indexed (see Store.page)."""
        spec_of(kind)
        learned = self._learned_matching(kind, equal)
        if not learned:
            objs, next_marker = self.store.page(kind, limit, marker, **equal)
            return self._views(kind, objs, by_position=False), next_marker
        everything = sorted(self.store.list(kind, **equal) + learned, key=lambda o: str(o["id"]))
        rest = [o for o in everything if marker is None or o["id"] > marker]
        return self._views(kind, rest[:limit], by_position=False), rest[limit - 1]["id"] if len(rest) > limit else None

    def _learned_matching(self, kind: str, equal: dict[str, Any]) -> builtins.list[Obj]:
        if kind != "routes":  # BGP-learned routes live in a state table, and read like declared ones
            return []
        return [r for r in learned_routes(self.store) if all(r.get(k) == v for k, v in equal.items())]

    def _views(self, kind: str, objs: builtins.list[Obj], by_position: bool = True) -> builtins.list[Obj]:
        chains: dict[str, Obj | None] = {}  # one read per chain, however many of its rules are listed
        views = [self._view(kind, o, chains) for o in objs]
        if kind == "rules" and by_position:
            views.sort(key=lambda r: (r["chain_id"], r["position"] or 0))
        return views

    def _view(self, kind: str, obj: Obj, chains: dict[str, Obj | None] | None = None) -> Obj:
        """Derived read-only fields: a rule's position, a host's liveness, a member's health, a BGP session's
        state."""
        out = dict(obj)
        if kind == "rules":
            out["position"] = self._rule_position(obj, {} if chains is None else chains)
        elif kind == "hosts":
            out["alive"] = self.store.state_get(HOSTS_ALIVE, obj["id"]) is not None
        elif kind == "pool_members":
            out = member_view(self.store, out)
        elif kind == "bgp_peers":
            out = peer_view(self.store, out)
            if out.get("password"):
                out["password"] = MASKED
        return out

    def _learned_route(self, route_id: str) -> Obj | None:
        return next((r for r in learned_routes(self.store) if r["id"] == route_id), None)

    def _refuse_learned(self, spec: Spec, obj_id: str) -> None:
        if spec.kind == "routes" and self.store.find("routes", obj_id) is None:
            learned = self._learned_route(obj_id)
            if learned is not None:
                raise Conflict(
                    f"route {obj_id} was learned from BGP (router {learned['router_id']}); it follows its peer "
                    "and cannot be changed or deleted here: withdraw it at the peer, or add a route with a "
                    "lower weight",
                    code="learned_route",
                )

    def _rule_position(self, rule: Obj, chains: dict[str, Obj | None]) -> int | None:
        if rule["chain_id"] not in chains:
            chains[rule["chain_id"]] = self.store.find("chains", rule["chain_id"])
        chain = chains[rule["chain_id"]]
        if chain is None or rule["id"] not in chain["rule_ids"]:
            return None
        return int(chain["rule_ids"].index(rule["id"])) + 1

    def find_device(self, device_id: str) -> tuple[str, Obj] | None:
        for kind in ("bridges", "routers"):
            obj = self.store.find(kind, device_id)
            if obj is not None:
                return kind, obj
        return None

    # --- generic writes -------------------------------------------------------------------------------
    def _retry(self, attempt: Callable[[], T]) -> T:
        """Re-run an optimistic write that lost a race, with jittered backoff so that contenders spread out."""
        for n in range(_ATTEMPTS - 1):
            try:
                return attempt()
            except VersionConflict:
                time.sleep(random.uniform(0, 0.002 * 2**n))
        return attempt()

    def create(self, kind: str, fields: Obj) -> Obj:
        spec = spec_of(kind)
        if not spec.creatable:
            raise InvalidInput(f"{spec.kind} cannot be created through the API: agents register them")
        forbidden = sorted(f for f in fields if f in spec.read_only)
        if forbidden:
            raise InvalidInput(f"{', '.join(forbidden)}: read-only (set by the server)", code="read_only_field")
        return self._retry(lambda: self._create_once(spec, dict(fields)))

    def _create_once(self, spec: Spec, fields: Obj) -> Obj:
        obj_id = fields.get("id") or str(uuid.uuid4())
        if self.store.find(spec.kind, obj_id) is not None:
            raise Conflict(f"a {spec.singular} with id {obj_id} already exists", code="already_exists")
        tx = Tx(self.store)
        obj = self._checked(tx, spec, {**fields, "id": obj_id}, None)
        tx.claim(spec.claims(obj))
        tx.creates.insert(0, Create(spec.kind, obj_id, obj))
        tx.commit()
        return self._view(spec.kind, obj)

    def _checked(self, tx: Tx, spec: Spec, draft: Obj, old: Obj | None) -> Obj:
        """The object a create (old is None) or update will write, with its kind's own hooks applied:
        `_prepare_<kind>` derives fields before validation, `_finish_<kind>` adds dependent operations."""
        prepare = getattr(self, f"_prepare_{spec.kind}", None)
        if prepare is not None:
            prepare(tx, draft, old)
        obj = self._validate(spec, draft)
        self._check_refs(tx, spec, obj, old)
        finish = getattr(self, f"_finish_{spec.kind}", None)
        if finish is not None:
            finish(tx, obj, old)
        return obj

    def update(self, kind: str, obj_id: str, changes: Obj) -> Obj:
        spec = spec_of(kind)
        if not spec.updatable:
            raise InvalidInput(f"{spec.kind} cannot be changed through the API")
        for fname in changes:
            if fname in spec.read_only or fname == "id":
                raise InvalidInput(f"{fname}: read-only (set by the server)", code="read_only_field")
        return self._retry(lambda: self._update_once(spec, obj_id, changes))

    def _update_once(self, spec: Spec, obj_id: str, changes: Obj) -> Obj:
        self._refuse_learned(spec, obj_id)
        current = self._get_versioned(spec, obj_id)
        old = current.value
        if spec.kind == "bgp_peers" and changes.get("password") == MASKED:
            changes = {k: v for k, v in changes.items() if k != "password"}  # the masked value round-trips
        for fname in spec.immutable:
            if fname in changes and changes[fname] != old.get(fname):
                raise InvalidInput(
                    f"{fname}: cannot be changed after creation; create a new {spec.singular} instead",
                    code="immutable_field",
                )
        tx = Tx(self.store)
        obj = self._checked(tx, spec, {**old, **changes}, old)
        old_claims, new_claims = spec.claims(old), spec.claims(obj)
        tx.release({c: m for c, m in old_claims.items() if c not in new_claims})
        tx.claim({c: m for c, m in new_claims.items() if c not in old_claims})
        tx.updates[(spec.kind, obj_id)] = (obj, current.version)
        tx.commit()
        return self._view(spec.kind, obj)

    def delete(self, kind: str, obj_id: str) -> None:
        spec = spec_of(kind)
        self._retry(lambda: self._delete_once(spec, obj_id))

    def _delete_once(self, spec: Spec, obj_id: str) -> None:
        self._refuse_learned(spec, obj_id)
        root = self._get_versioned(spec, obj_id)
        guard = getattr(self, f"_before_delete_{spec.kind}", None)
        if guard is not None:
            guard(root.value)
        deletion(self.store, spec, root).commit()

    def _get_versioned(self, spec: Spec, obj_id: str) -> Versioned:
        try:
            return self.store.get_versioned(spec.kind, obj_id)
        except NotFound:
            raise NotFound(f"no {spec.singular} with id {obj_id}") from None

    @staticmethod
    def _validate(spec: Spec, draft: Obj) -> Obj:
        try:
            return spec.model.model_validate(draft).model_dump(mode="json")
        except ValidationError as exc:
            raise InvalidInput(validation_message(exc), code="invalid_field") from None

    def _check_refs(self, tx: Tx, spec: Spec, obj: Obj, old: Obj | None) -> None:
        for ref in spec.refs:
            before = set(ref.values(old)) if old is not None else set()
            for target in ref.values(obj):
                if target in before:
                    continue
                kind = next((k for k in ref.kinds if self.store.find(k, target) is not None), None)
                if kind is None:
                    if not ref.must_exist:
                        continue
                    names = " or ".join(SPECS[k].singular for k in ref.kinds)
                    raise NotFound(f"{ref.field}: no {names} with id {target}", code="unknown_reference")
                tx.check(kind, target)

    # --- ports -------------------------------------------------------------------------------------------
    def _prepare_ports(self, tx: Tx, draft: Obj, old: Obj | None) -> None:
        if old is not None:
            return
        device_id = draft.get("device_id")
        if not isinstance(device_id, str):
            raise InvalidInput("device_id: required (the bridge or router this port belongs to)")
        found = self.find_device(device_id)
        if found is None:
            raise NotFound(f"device_id: no bridge or router with id {device_id}", code="unknown_reference")
        draft["type"] = "bridge" if found[0] == "bridges" else "router"
        draft["tunnel_key"] = self._free_claim(lambda: random.randint(1, (1 << 24) - 1), "tunnel_key")
        if draft["type"] == "router" and not draft.get("port_mac"):
            draft["port_mac"] = self._free_claim(
                lambda: "02:6b:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(4)), "mac"
            )

    def _free_claim(self, pick: Callable[[], Any], prefix: str) -> Any:
        for _ in range(64):
            value = pick()
            if self.store.find(CLAIMS_KIND, f"{prefix}:{value}") is None:
                return value
        raise Conflict(f"could not find a free {prefix}; too many in use", code="exhausted")

    def _finish_ports(self, tx: Tx, port: Obj, old: Obj | None) -> None:
        if port["peer_id"] is not None and port["host_id"] is not None:
            raise Conflict(
                f"port {port['id']} is linked to port {port['peer_id']} (interior); unlink it before binding",
                code="port_linked",
            )
        if port["type"] != "router":
            return
        local = f"{port['port_address']}/32"
        if old is None:
            for route in self._port_routes(port):
                tx.creates.append(Create("routes", route["id"], route))
            return
        if (old["port_address"], old["network_cidr"]) == (port["port_address"], port["network_cidr"]):
            return
        for route in self.store.list("routes", next_hop_port_id=port["id"]):
            if route["type"] == "local" and route["dst_cidr"] == f"{old['port_address']}/32":
                tx.modify("routes", route["id"])["dst_cidr"] = local
            elif route["dst_cidr"] == old["network_cidr"] and route["next_hop_gateway"] is None:
                tx.modify("routes", route["id"])["dst_cidr"] = port["network_cidr"]

    @staticmethod
    def _port_routes(port: Obj) -> builtins.list[Obj]:
        """A router port's LOCAL /32 route (to the router itself) and its directly connected network."""
        base = {
            "router_id": port["device_id"],
            "src_cidr": "0.0.0.0/0",
            "next_hop_port_id": port["id"],
            "next_hop_gateway": None,
            "weight": 100,
            "learned": False,
        }
        return [
            {
                **base,
                "id": str(uuid.uuid4()),
                "dst_cidr": f"{port['port_address']}/32",
                "type": "local",
                "weight": 0,
            },
            {**base, "id": str(uuid.uuid4()), "dst_cidr": port["network_cidr"], "type": "normal"},
        ]

    def link(self, port_id: str, peer_id: str) -> Obj:
        return self._retry(lambda: self._link_once(port_id, peer_id))

    def _link_once(self, port_id: str, peer_id: str) -> Obj:
        if port_id == peer_id:
            raise InvalidInput("peer_id: a port cannot be linked to itself")
        ports = SPECS["ports"]
        tx = Tx(self.store)
        try:
            a, b = tx.modify("ports", port_id), tx.modify("ports", peer_id)
        except NotFound as exc:
            missing = port_id if self.store.find("ports", port_id) is None else peer_id
            field = "port" if missing == port_id else "peer_id"
            raise NotFound(f"{field}: no {ports.singular} with id {missing}") from exc
        for p in (a, b):
            if p["peer_id"] is not None:
                raise Conflict(
                    f"port {p['id']} is already linked to port {p['peer_id']}; unlink it first",
                    code="port_already_linked",
                )
            if p["host_id"] is not None:
                raise Conflict(
                    f"port {p['id']} is bound to {p['interface_name']} on host {p['host_id']} (exterior); "
                    "unbind it before linking",
                    code="port_bound",
                )
        if a["device_id"] == b["device_id"]:
            raise InvalidInput("peer_id: both ports belong to the same device; link ports of two devices")
        if a["type"] == b["type"] == "bridge" and a["vlan_id"] is None and b["vlan_id"] is None:
            raise InvalidInput(
                "vlan_id: a bridge-to-bridge link needs a vlan_id on one of the two ports",
                code="vlan_required",
            )
        a["peer_id"], b["peer_id"] = peer_id, port_id
        tx.commit()
        return self._view("ports", a)

    def unlink(self, port_id: str) -> Obj:
        return self._retry(lambda: self._unlink_once(port_id))

    def _unlink_once(self, port_id: str) -> Obj:
        tx = Tx(self.store)
        self._get_versioned(SPECS["ports"], port_id)
        port = tx.modify("ports", port_id)
        if port["peer_id"] is None:
            raise Conflict(f"port {port_id} is not linked", code="not_linked")
        tx.modify("ports", port["peer_id"])["peer_id"] = None
        port["peer_id"] = None
        tx.commit()
        return self._view("ports", port)

    def bind(self, port_id: str, host_id: str, interface_name: str) -> Obj:
        return self.update("ports", port_id, {"host_id": host_id, "interface_name": interface_name})

    def unbind(self, port_id: str) -> Obj:
        return self.update("ports", port_id, {"host_id": None, "interface_name": None})

    # --- routes ----------------------------------------------------------------------------------------
    def _finish_routes(self, tx: Tx, route: Obj, old: Obj | None) -> None:
        port_id = route["next_hop_port_id"]
        if port_id is None:
            return
        port = self.store.find("ports", port_id)
        if port is not None and port["device_id"] != route["router_id"]:
            raise InvalidInput(
                f"next_hop_port_id: port {port_id} belongs to device {port['device_id']}, "
                f"not to router {route['router_id']}; use one of this router's ports"
            )

    # --- rules -------------------------------------------------------------------------------------------
    def _prepare_rules(self, tx: Tx, draft: Obj, old: Obj | None) -> None:
        chain_id = draft.get("chain_id")
        if not isinstance(chain_id, str) or self.store.find("chains", chain_id) is None:
            raise NotFound(f"chain_id: no chain with id {chain_id}", code="unknown_reference")
        chain = tx.modify("chains", chain_id)
        rule_ids = [r for r in chain["rule_ids"] if r != draft["id"]]
        position = draft.get("position")
        if old is not None and position is None:
            return
        limit = len(rule_ids) + 1
        if position is None:
            position = limit
        if not isinstance(position, int) or not 1 <= position <= limit:
            raise InvalidInput(f"position: must be between 1 and {limit} (the chain has {len(rule_ids)} other rules)")
        rule_ids.insert(position - 1, draft["id"])
        chain["rule_ids"] = rule_ids

    def _finish_rules(self, tx: Tx, rule: Obj, old: Obj | None) -> None:
        rule["position"] = None  # derived from the chain's rule_ids on every read

    # --- DHCP --------------------------------------------------------------------------------------------
    def _prepare_dhcp_hosts(self, tx: Tx, draft: Obj, old: Obj | None) -> None:
        subnet_id = draft.get("subnet_id")
        subnet = self.store.find("dhcp_subnets", subnet_id) if isinstance(subnet_id, str) else None
        if subnet is None:
            raise NotFound(f"subnet_id: no DHCP subnet with id {subnet_id}", code="unknown_reference")
        draft["bridge_id"] = subnet["bridge_id"]
        ip = draft.get("ip_address")
        if isinstance(ip, str):
            from kumo.topology.fields import ip_in

            try:
                inside = ip_in(ip, subnet["cidr"])
            except ValueError:
                return  # not an address at all: the model names the field
            if not inside:
                raise InvalidInput(f"ip_address {ip} is not inside the subnet {subnet['cidr']}")

    # --- BGP ------------------------------------------------------------------------------------------
    def _finish_bgp_peers(self, tx: Tx, peer: Obj, old: Obj | None) -> None:
        """A session speaks for its router's AS (RFC 4271 §4.2: the OPEN carries it): no AS, no peers."""
        router = self.store.find("routers", peer["router_id"])
        if router is not None and router.get("asn") is None:
            raise Conflict(
                f"asn: router {peer['router_id']} has no AS number; set the router's asn first "
                '(PATCH /v1/routers/{id} {"asn": N}, or kumo router set ROUTER --asn N)',
                code="router_without_asn",
            )

    def _finish_routers(self, tx: Tx, router: Obj, old: Obj | None) -> None:
        if old is None or old.get("asn") is None or router.get("asn") is not None:
            return
        peers = [p["address"] for p in self.store.list("bgp_peers", router_id=router["id"])]
        if peers:
            raise Conflict(
                f"asn: router {router['id']} has BGP peers ({', '.join(sorted(peers))}); delete them before "
                "removing its AS number",
                code="in_use",
            )

    # --- hosts and tunnel zones -------------------------------------------------------------------------
    def _before_delete_hosts(self, host: Obj) -> None:
        if self.store.state_get(HOSTS_ALIVE, host["id"]) is not None:
            raise Conflict(f"host {host['id']} is alive; stop its agent before deleting it", code="host_alive")

    @staticmethod
    def member_id(zone_id: str, host_id: str) -> str:
        return str(uuid.uuid5(MEMBER_NAMESPACE, f"{zone_id}/{host_id}"))

    def put_member(self, zone_id: str, host_id: str, ip_address: str) -> Obj:
        self.get("tunnel_zones", zone_id)
        member_id = self.member_id(zone_id, host_id)
        body = {"tunnel_zone_id": zone_id, "host_id": host_id, "ip_address": ip_address}
        if self.store.find("tunnel_zone_members", member_id) is None:
            return self.create("tunnel_zone_members", {"id": member_id, **body})
        return self.update("tunnel_zone_members", member_id, {"ip_address": ip_address})

    def delete_member(self, zone_id: str, host_id: str) -> None:
        self.get("tunnel_zones", zone_id)
        member_id = self.member_id(zone_id, host_id)
        if self.store.find("tunnel_zone_members", member_id) is None:
            raise NotFound(f"host {host_id} is not a member of tunnel zone {zone_id}")
        self.delete("tunnel_zone_members", member_id)
