"""A tenant token's view of the topology: only its tenant's objects (kumo.api.auth, role `tenant`).

An object belongs to a tenant through its own `tenant_id` (bridges, routers, chains, port groups, IP address
groups, health monitors) or through the object it hangs off (a port through its device, a rule through its
chain, a route through its router, a pool member through its pool, its load balancer, its router...). For a
tenant token:
- what is not its tenant's does not exist (404, as for an id nobody has), in reads and in references: a
  port cannot name another tenant's chain as its filter;
- what it creates is its tenant's (`tenant_id` is set; another one is refused, 403);
- hosts, tunnel zones and port bindings are the operator's (403).
Admin and reader tokens, and an API without authentication, see everything (PRINCIPAL is not a tenant's).
"""

from __future__ import annotations

import builtins
from typing import Any

from kumo.api.auth import PRINCIPAL
from kumo.topology.errors import Forbidden, NotFound
from kumo.topology.resources import SPECS
from kumo.topology.service import Topology
from kumo.topology.store.base import Obj

OWNED_BY = {  # kind -> the field naming the object it belongs to
    "ports": "device_id",
    "rules": "chain_id",
    "routes": "router_id",
    "dhcp_subnets": "bridge_id",
    "dhcp_hosts": "subnet_id",
    "load_balancers": "router_id",
    "pools": "load_balancer_id",
    "pool_members": "pool_id",
    "vips": "pool_id",
    "bgp_peers": "router_id",
    "bgp_networks": "router_id",
}
OPERATORS_ONLY = frozenset({"hosts", "tunnel_zones", "tunnel_zone_members"})


def _tenant() -> str | None:
    principal = PRINCIPAL.get()
    return principal.tenant_id if principal is not None and principal.role == "tenant" else None


def _has_tenant_field(kind: str) -> bool:
    return "tenant_id" in SPECS[kind].model.model_fields


class TenantScopedTopology(Topology):
    # --- whose an object is ---------------------------------------------------------------------------------
    def tenant_of(self, kind: str, obj: Obj) -> str | None:
        for _ in range(8):  # (ownership chains are at most 4 long: member -> pool -> balancer -> router)
            if _has_tenant_field(kind):
                return obj.get("tenant_id")
            field = OWNED_BY.get(kind)
            if field is None or not obj.get(field):
                return None
            ref = next(r for r in SPECS[kind].refs if r.field == field)
            parent = next(((k, p) for k in ref.kinds if (p := self.store.find(k, obj[field])) is not None), None)
            if parent is None:
                return None
            kind, obj = parent
        return None

    def _mine(self, kind: str, obj: Obj, tenant: str) -> bool:
        return self.tenant_of(kind, obj) == tenant

    def _check_kind(self, kind: str, tenant: str) -> None:
        if kind in OPERATORS_ONLY:
            raise Forbidden(f"{kind} are the operator's: a tenant token cannot use them")

    def _refs_are_mine(self, kind: str, fields: Obj, tenant: str) -> None:
        """Every object `fields` names must be the tenant's (else it does not exist, for this token)."""
        for ref in SPECS[kind].refs:
            for target in ref.values(fields):
                found = [(k, o) for k in ref.kinds if (o := self.store.find(k, target)) is not None]
                if found and not any(self._mine(k, o, tenant) for k, o in found):
                    raise NotFound(f"{ref.field}: no object with id {target}", code="unknown_reference")

    # --- reads ------------------------------------------------------------------------------------------------
    def get(self, kind: str, obj_id: str) -> Obj:
        obj = super().get(kind, obj_id)
        tenant = _tenant()
        if tenant is not None:
            self._check_kind(kind, tenant)
            if not self._mine(kind, obj, tenant):
                raise NotFound(f"no {SPECS[kind].singular} with id {obj_id}")
        return obj

    def list(self, kind: str, **equal: Any) -> builtins.list[Obj]:
        tenant = _tenant()
        if tenant is None:
            return super().list(kind, **equal)
        self._check_kind(kind, tenant)
        if _has_tenant_field(kind):
            equal = {**equal, "tenant_id": tenant}
        return [o for o in super().list(kind, **equal) if self._mine(kind, o, tenant)]

    def page(
        self, kind: str, limit: int, marker: str | None = None, **equal: Any
    ) -> tuple[builtins.list[Obj], str | None]:
        tenant = _tenant()
        if tenant is None:
            return super().page(kind, limit, marker, **equal)
        self._check_kind(kind, tenant)
        if _has_tenant_field(kind):
            equal = {**equal, "tenant_id": tenant}
        objs, next_marker = super().page(kind, limit, marker, **equal)
        return [o for o in objs if self._mine(kind, o, tenant)], next_marker

    # --- writes -----------------------------------------------------------------------------------------------
    def create(self, kind: str, fields: Obj) -> Obj:
        tenant = _tenant()
        if tenant is not None:
            self._check_kind(kind, tenant)
            if _has_tenant_field(kind):
                if fields.get("tenant_id") not in (None, tenant):
                    raise Forbidden(f"tenant_id: this token creates objects of tenant {tenant} only")
                fields = {**fields, "tenant_id": tenant}
            self._refs_are_mine(kind, fields, tenant)
            if kind in OWNED_BY and not fields.get(OWNED_BY[kind]):
                raise Forbidden(f"{OWNED_BY[kind]}: required for a tenant token")
        return super().create(kind, fields)

    def update(self, kind: str, obj_id: str, changes: Obj) -> Obj:
        tenant = _tenant()
        if tenant is not None:
            self.get(kind, obj_id)
            if "tenant_id" in changes and changes["tenant_id"] != tenant:
                raise Forbidden(f"tenant_id: this token keeps objects in tenant {tenant}")
            self._refs_are_mine(kind, changes, tenant)
            if kind == "ports" and ("host_id" in changes or "interface_name" in changes):
                raise Forbidden("port bindings are the operator's: a tenant token cannot bind or unbind")
        return super().update(kind, obj_id, changes)

    def delete(self, kind: str, obj_id: str) -> None:
        if _tenant() is not None:
            self.get(kind, obj_id)
        super().delete(kind, obj_id)

    def link(self, port_id: str, peer_id: str) -> Obj:
        if _tenant() is not None:
            self.get("ports", port_id)
            self.get("ports", peer_id)
        return super().link(port_id, peer_id)

    def unlink(self, port_id: str) -> Obj:
        if _tenant() is not None:
            self.get("ports", port_id)
        return super().unlink(port_id)

    def put_member(self, zone_id: str, host_id: str, ip_address: str) -> Obj:
        if _tenant() is not None:
            raise Forbidden("tunnel zones are the operator's: a tenant token cannot use them")
        return super().put_member(zone_id, host_id, ip_address)

    def delete_member(self, zone_id: str, host_id: str) -> None:
        if _tenant() is not None:
            raise Forbidden("tunnel zones are the operator's: a tenant token cannot use them")
        super().delete_member(zone_id, host_id)
