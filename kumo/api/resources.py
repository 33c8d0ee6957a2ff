"""Generic CRUD endpoints, one set per resource of the registry (kumo/topology/resources.py).

Top-level kinds get /v1/<kind>[/{id}]; nested kinds get /v1/<parent path>/{parent_field}/<segment>[/{id}]
and also /v1/<kind>/{id} for GET, PATCH and DELETE by id alone. Handlers are built with explicit
signatures so that /openapi.json declares every path parameter and body schema.
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from kumo.topology.errors import InvalidInput, NotFound
from kumo.topology.indexes import FILTER_FIELDS
from kumo.topology.resources import SPECS, Spec, path_params
from kumo.topology.service import Topology


def collection_path(spec: Spec) -> str:
    if spec.parent is None:
        return f"/{spec.kind}"
    parent = SPECS[spec.parent]
    return f"{collection_path(parent)}/{{{spec.parent_field}}}/{spec.path_segment}"


def _signature(
    fn: Callable[..., Any],
    names: list[str],
    body: Any = None,
    body_required: bool = False,
    query: list[str] | None = None,
) -> None:
    params = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=str) for n in names]
    if query is not None:  # optional query parameters, declared in /openapi.json; the request itself too
        params.insert(0, inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request))
        params += [
            inspect.Parameter(q, inspect.Parameter.KEYWORD_ONLY, annotation=str | None, default=Query(None))
            for q in query
        ]
    if body is not None:
        default = Body(...) if body_required else Body(default=None)
        params.append(inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=body, default=default))
    fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class PageQuery:
    limit: int
    marker: str | None


MAX_LIMIT = 1000


def _page_query(request: Request, filters: list[str]) -> PageQuery | None:
    """`?limit=&marker=` (None: the whole collection, as before pagination existed). Unknown parameters are
    refused rather than ignored: a misspelt filter must not silently return everything."""
    query = request.query_params
    unknown = sorted(set(query) - {*filters, "limit", "marker"})
    if unknown:
        known = ", ".join([*filters, "limit", "marker"])
        raise InvalidInput(f"{', '.join(unknown)}: unknown query parameter; this collection takes {known}")
    if "limit" not in query:
        if "marker" in query:
            raise InvalidInput("marker: only with limit (e.g. ?limit=100&marker=<last id of the previous page>)")
        return None
    try:
        limit = int(query["limit"])
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit: must be a whole number from 1 to {MAX_LIMIT}, got {query['limit']!r}")
    return PageQuery(limit, query.get("marker") or None)


def check_parents(topo: Topology, spec: Spec, params: dict[str, str]) -> None:
    """Each parent in the path exists and belongs to the one before it (404 otherwise)."""
    previous: tuple[str, str] | None = None
    for name, parent in path_params(spec):
        obj = topo.get(parent.kind, params[name])
        if previous is not None and obj.get(previous[0]) != previous[1]:
            raise NotFound(f"{parent.singular} {params[name]} is not under {previous[0]} {previous[1]}")
        previous = (name, params[name])


def _owned(topo: Topology, spec: Spec, params: dict[str, str], obj_id: str) -> dict[str, Any]:
    check_parents(topo, spec, params)
    obj = topo.get(spec.kind, obj_id)
    if spec.parent_field and obj.get(spec.parent_field) != params[spec.parent_field]:
        raise NotFound(f"no {spec.singular} with id {obj_id} under {spec.parent_field} {params[spec.parent_field]}")
    return obj


def add_resource_routes(router: APIRouter, spec: Spec, topo: Topology) -> None:
    base = collection_path(spec)
    names = [n for n, _ in path_params(spec)]
    tag = spec.kind
    create_model = spec.create_model()
    update_model = spec.update_model()
    model = spec.model

    filters = [f for f in FILTER_FIELDS if f in model.model_fields and f != spec.parent_field]

    async def list_items(request: Request, **params: Any) -> Response:
        page = _page_query(request, filters)

        def work() -> Response:
            check_parents(topo, spec, params)
            equal = {f: params[f] for f in filters if params.get(f) is not None}
            if spec.parent_field in params:
                equal[spec.parent_field] = params[spec.parent_field]
            if page is None:
                return JSONResponse(topo.list(spec.kind, **equal))
            items, next_marker = topo.page(spec.kind, page.limit, page.marker, **equal)
            headers = {}
            if next_marker is not None:
                query = urlencode({**request.query_params, "marker": next_marker})
                headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
            return JSONResponse(items, headers=headers)

        return await run_in_threadpool(work)

    _signature(list_items, names, query=[*filters, "limit", "marker"])
    router.add_api_route(
        base,
        list_items,
        methods=["GET"],
        tags=[tag],
        summary=f"List {spec.kind}",
        operation_id=f"list_{spec.kind}",
        responses={200: {"model": list[model]}},  # type: ignore[valid-type]
    )

    if spec.creatable:

        async def create_item(body: Any = None, **params: str) -> Response:
            def work() -> dict[str, Any]:
                check_parents(topo, spec, params)
                fields = body.model_dump(exclude_unset=True) if body is not None else {}
                if spec.parent_field in params:
                    fields[spec.parent_field] = params[spec.parent_field]
                return topo.create(spec.kind, fields)

            return JSONResponse(status_code=201, content=await run_in_threadpool(work))

        _signature(create_item, names, body=create_model)
        router.add_api_route(
            base,
            create_item,
            methods=["POST"],
            tags=[tag],
            status_code=201,
            summary=f"Create a {spec.singular}",
            operation_id=f"create_{spec.kind}",
            responses={201: {"model": model}},
        )

    # Items by their nested path, and (nested kinds) by id alone: /v1/<kind>/{id}.
    _add_item_routes(router, spec, topo, f"{base}/{{id}}", names, update_model, "")
    if spec.parent is not None:
        _add_item_routes(router, spec, topo, f"/{spec.kind}/{{id}}", [], update_model, "_by_id")


def _add_item_routes(
    router: APIRouter, spec: Spec, topo: Topology, path: str, names: list[str], update_model: Any, suffix: str
) -> None:
    tag = spec.kind

    def owned(params: dict[str, str]) -> dict[str, Any]:
        obj_id = params.pop("id")
        if names:
            return _owned(topo, spec, params, obj_id)
        return topo.get(spec.kind, obj_id)

    async def get_item(**params: str) -> dict[str, Any]:
        return await run_in_threadpool(owned, params)

    _signature(get_item, [*names, "id"])
    router.add_api_route(
        path,
        get_item,
        methods=["GET"],
        tags=[tag],
        summary=f"Show a {spec.singular}",
        operation_id=f"get_{spec.kind}{suffix}",
        responses={200: {"model": spec.model}},
    )

    if spec.updatable:

        async def patch_item(body: Any = None, **params: str) -> dict[str, Any]:
            def work() -> dict[str, Any]:
                obj = owned(params)
                changes = body.model_dump(exclude_unset=True) if body is not None else {}
                return topo.update(spec.kind, obj["id"], changes)

            return await run_in_threadpool(work)

        _signature(patch_item, [*names, "id"], body=update_model)
        router.add_api_route(
            path,
            patch_item,
            methods=["PATCH"],
            tags=[tag],
            summary=f"Change a {spec.singular}",
            operation_id=f"update_{spec.kind}{suffix}",
            responses={200: {"model": spec.model}},
        )

    async def delete_item(**params: str) -> Response:
        def work() -> None:
            obj = owned(params)
            topo.delete(spec.kind, obj["id"])

        await run_in_threadpool(work)
        return Response(status_code=204)

    _signature(delete_item, [*names, "id"])
    router.add_api_route(
        path,
        delete_item,
        methods=["DELETE"],
        tags=[tag],
        status_code=204,
        summary=f"Delete a {spec.singular}",
        operation_id=f"delete_{spec.kind}{suffix}",
    )
