"""The FastAPI application: `create_app(store)` serves API.md's REST API on any Store backend."""

from fastapi import APIRouter, FastAPI

import kumo
from kumo.api.auth import TokenAuth
from kumo.api.errors import install_error_handlers
from kumo.api.metrics import add_metrics
from kumo.api.pools import add_pool_routes
from kumo.api.ports import add_port_routes
from kumo.api.resources import add_resource_routes
from kumo.api.tenancy import TenantScopedTopology
from kumo.api.traces import add_trace_routes
from kumo.api.ui import add_ui_routes
from kumo.topology.resources import SPECS
from kumo.topology.service import Topology
from kumo.topology.store.base import Store


def create_app(store: Store, auth: bool = False) -> FastAPI:
    """With `auth`, every request but the health check needs a token (kumo.api.auth), and a tenant token sees
    its tenant's objects only (kumo.api.tenancy)."""
    app = FastAPI(
        title="Kumo",
        version=kumo.__version__,
        description="Network virtualization overlay: bridges, routers, chains, NAT, L4LB, DHCP, BGP.",
        openapi_url="/openapi.json",
    )
    topo = TenantScopedTopology(store) if auth else Topology(store)
    app.state.topology = topo
    app.state.auth = auth
    if auth:
        app.add_middleware(TokenAuth, store=store)
    app.state.metrics = add_metrics(app)  # (added last, so outermost: refused requests are counted too)
    install_error_handlers(app)
    router = APIRouter(prefix="/v1")
    # Fixed paths first: /ports/{id}/link must not be taken for a nested collection.
    add_port_routes(router, topo)
    add_pool_routes(router, topo)
    add_trace_routes(router, topo)
    for spec in SPECS.values():
        if spec.generic_api:
            add_resource_routes(router, spec, topo)

    @router.get("/health", tags=["meta"], summary="Liveness of the API server (needs no token)")
    async def health() -> dict[str, object]:
        return {"status": "ok", "auth": auth}

    @router.get("/", tags=["meta"], summary="API root: version and collections")
    async def root() -> dict[str, object]:
        return {
            "version": kumo.__version__,
            "collections": sorted(s.kind for s in SPECS.values() if s.generic_api),
        }

    app.include_router(router)
    pages = APIRouter()
    add_ui_routes(pages, topo)
    app.include_router(pages)
    return app
