"""Generic CRUD endpoints, one set per resource of the registry (kumo/topology/resources.py).

Top-level kinds get /v1/<kind>[/{id}]; nested kinds get /v1/<parent path>/{parent_field}/<segment>[/{id}]
and also /v1/<kind>/{id} for GET, PATCH and DELETE by id alone. Handlers are built with explicit
signatures so that /openapi.json declares every path parameter and body schema.
"""

import inspect
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from kumo.topology.errors import NotFound
from kumo.topology.resources import SPECS, Spec, path_params
from kumo.topology.service import Topology


def collection_path(spec: Spec) -> str:
    if spec.parent is None:
        return f"/{spec.kind}"
    parent = SPECS[spec.parent]
    return f"{collection_path(parent)}/{{{spec.parent_field}}}/{spec.path_segment}"


def _signature(fn: Callable[..., Any], names: list[str], body: Any = None, body_required: bool = False) -> None:
    params = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=str) for n in names]
    if body is not None:
        default = Body(...) if body_required else Body(default=None)
        params.append(inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=body, default=default))
    fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]


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

    async def list_items(**params: str) -> list[dict[str, Any]]:
        def work() -> list[dict[str, Any]]:
            check_parents(topo, spec, params)
            filters = {spec.parent_field: params[spec.parent_field]} if spec.parent_field in params else {}
            return topo.list(spec.kind, **filters)

        return await run_in_threadpool(work)

    _signature(list_items, names)
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
