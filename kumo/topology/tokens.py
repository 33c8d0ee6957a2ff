"""API tokens: who may use the REST API, and as what (kumo.api.auth).

A token is `kumo-<id>-<secret>`. The store keeps, in the `api_tokens` state table under its id, the SHA-256
of its secret (never the secret: a token is shown once, when it is made), its role, the tenant it is bound
to, a name and when it was made. Secrets are 256 random bits, so one SHA-256 is enough to keep them from
being read back (there is nothing to guess), and comparisons are constant-time.

Roles: `admin` (everything), `reader` (reads only), `tenant` (everything, on the objects of its
`tenant_id` only: kumo.api.tenancy). Revoking deletes the row: the next request with the token is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from kumo.topology.errors import InvalidInput, NotFound
from kumo.topology.store.base import Store

API_TOKENS = "api_tokens"
ROLES = ("admin", "reader", "tenant")
_FORMAT = re.compile(r"^kumo-([0-9a-f]{12})-([A-Za-z0-9_-]{20,100})$")


@dataclass(frozen=True)
class Principal:
    """Who a request comes from."""

    token_id: str
    role: str
    tenant_id: str | None = None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    store: Store, role: str, tenant_id: str | None = None, name: str | None = None
) -> tuple[dict[str, Any], str]:
    """A new token: its row as listed (no secret, no digest), and the token itself (shown once)."""
    if role not in ROLES:
        raise InvalidInput(f"role {role!r}: use one of {', '.join(ROLES)}")
    if (role == "tenant") != (tenant_id is not None):
        raise InvalidInput("a tenant token needs --tenant-id, and only a tenant token takes one")
    token_id = uuid.uuid4().hex[:12]
    secret = secrets.token_urlsafe(32)
    row = {"role": role, "tenant_id": tenant_id, "name": name, "created_at": time.time(), "sha256": _digest(secret)}
    store.state_put(API_TOKENS, token_id, row)
    return _listed(token_id, row), f"kumo-{token_id}-{secret}"


def list_tokens(store: Store) -> list[dict[str, Any]]:
    return [_listed(token_id, row) for token_id, row in sorted(store.state_list(API_TOKENS).items())]


def revoke_token(store: Store, token_id: str) -> None:
    if store.state_get(API_TOKENS, token_id) is None:
        raise NotFound(f"no API token with id {token_id} (`kumo token list` shows them)")
    store.state_delete(API_TOKENS, token_id)


def verify(store: Store, token: str) -> Principal | None:
    """The principal a presented token stands for, or None (malformed, unknown, revoked or wrong)."""
    found = _FORMAT.match(token)
    if found is None:
        return None
    token_id, secret = found.groups()
    row = store.state_get(API_TOKENS, token_id)
    if row is None or not hmac.compare_digest(str(row.get("sha256", "")), _digest(secret)):
        return None
    return Principal(token_id, str(row["role"]), row.get("tenant_id"))


def any_token(store: Store) -> bool:
    return bool(store.state_list(API_TOKENS))


def _listed(token_id: str, row: dict[str, Any]) -> dict[str, Any]:
    return {"id": token_id, **{k: row.get(k) for k in ("role", "tenant_id", "name", "created_at")}}
