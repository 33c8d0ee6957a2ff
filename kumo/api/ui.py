"""The live picture (docs/ui.md): `GET /ui`, a page whose script draws `GET /ui/topology.svg` (kumo.ui.graph),
refreshes it, shows a clicked port's chains and traces packets through `POST /v1/traces`.

The page and its script hold no data and need no token (a browser cannot send one before the page asks for
it); everything they show comes from token-checked reads: the SVG here and the REST API."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool

from kumo.topology.errors import Forbidden
from kumo.topology.portstats import all_port_stats
from kumo.topology.service import Topology
from kumo.ui.graph import KINDS, svg

STATIC = {  # path -> (file in kumo/ui/static, media type)
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/ui.js": ("ui.js", "text/javascript; charset=utf-8"),
    "/ui/ui.css": ("ui.css", "text/css; charset=utf-8"),
}
OPEN_PATHS = frozenset(STATIC)  # (kumo.api.auth lets them through: no data in them)


def visible_objects(topo: Topology) -> dict[str, list[dict[str, Any]]]:
    """What the caller may read of KINDS (a tenant token: its tenant's objects, and no hosts)."""
    out = {}
    for kind in KINDS:
        try:
            out[kind] = topo.list(kind)
        except Forbidden:
            out[kind] = []
    return out


def topology_svg(topo: Topology) -> bytes:
    objects = visible_objects(topo)
    ports = {p["id"] for p in objects["ports"]}
    stats = {port_id: row for port_id, row in all_port_stats(topo.store).items() if port_id in ports}
    return svg(objects, stats)


def add_ui_routes(router: APIRouter, topo: Topology) -> None:
    for path, (name, media_type) in STATIC.items():
        body = resources.files("kumo.ui").joinpath("static", name).read_bytes()

        async def page(body: bytes = body, media_type: str = media_type) -> Response:
            return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})

        router.add_api_route(path, page, methods=["GET"], include_in_schema=False)

    @router.get(
        "/ui/topology.svg",
        tags=["ui"],
        summary="The topology as a picture (SVG, drawn by Graphviz)",
        response_class=Response,
        responses={200: {"content": {"image/svg+xml": {}}, "description": "An SVG picture"}},
    )
    async def topology() -> Response:
        drawing = await run_in_threadpool(topology_svg, topo)
        return Response(drawing, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})
