"""Load balancing's derived reads: a pool's statistics, added up from what the agents publish."""

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from kumo.topology.lbstatus import pool_stats
from kumo.topology.service import Topology


def add_pool_routes(router: APIRouter, topo: Topology) -> None:
    @router.get("/pools/{id}/stats", tags=["pools"], summary="Per member: connections and bytes, from the agents")
    async def stats(id: str) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            topo.get("pools", id)
            return pool_stats(topo.store, id)

        return await run_in_threadpool(work)
