"""Bearer-token authentication of the REST API (`kumo api --auth`; tokens: kumo.topology.tokens).

An ASGI middleware in front of the whole application: every request but `GET /v1/health` (and the picture's
page and script, which hold no data: kumo.api.ui) needs
`Authorization: Bearer <token>`. No token, or one that is unknown, malformed or revoked: 401. A `reader` token
that asks for a change: 403 (a trace, `POST /v1/traces`, writes nothing and is allowed). The principal is
then known to the request (PRINCIPAL), and a `tenant` token's requests are confined to its tenant's objects
(kumo.api.tenancy). The token is checked against the store on every request, so a revoked token stops
working at once."""

from __future__ import annotations

import contextvars
import logging
from typing import Any

from fastapi.concurrency import run_in_threadpool

from kumo.api.errors import error_response
from kumo.api.ui import OPEN_PATHS as UI_PAGES
from kumo.topology.errors import KumoError
from kumo.topology.store.base import Store
from kumo.topology.tokens import Principal, verify

log = logging.getLogger("kumo.api")

PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("kumo_principal", default=None)
OPEN_PATHS = frozenset({"/v1/health", *UI_PAGES})  # (the picture's page and script: no data in them)
READS = frozenset({"GET", "HEAD", "OPTIONS"})
READER_POSTS = frozenset({"/v1/traces"})  # (a trace simulates, and writes nothing)
UNAUTHORIZED = (
    "this API needs a token: send `Authorization: Bearer TOKEN` (the CLI: KUMO_TOKEN or --token-file); "
    "an operator makes one with `kumo token create --store URL --role admin|reader|tenant`"
)


class TokenAuth:
    def __init__(self, app: Any, store: Store) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            principal = await self._principal(scope)
        except KumoError as exc:  # (the store is away: 503, as any request would get)
            await error_response(exc.status, exc.code, exc.message)(scope, receive, send)
            return
        if principal is None:
            response = error_response(401, "unauthorized", UNAUTHORIZED)
            response.headers["WWW-Authenticate"] = 'Bearer realm="kumo"'
            await response(scope, receive, send)
            return
        if principal.role == "reader" and scope["method"] not in READS and scope["path"] not in READER_POSTS:
            message = f"a reader token cannot change anything ({scope['method']} {scope['path']}): use an admin token"
            await error_response(403, "forbidden", message)(scope, receive, send)
            return
        bound = PRINCIPAL.set(principal)
        try:
            await self.app(scope, receive, send)
        finally:
            PRINCIPAL.reset(bound)

    async def _principal(self, scope: dict[str, Any]) -> Principal | None:
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"").decode(errors="replace")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return await run_in_threadpool(verify, self.store, token.strip())
