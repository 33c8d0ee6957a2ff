"""Port links (interior) and bindings (exterior), tunnel-zone membership, learned-state tables."""

from typing import Any

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool

from kumo.topology import state
from kumo.topology.fields import Id, InterfaceName, IPv4, Strict
from kumo.topology.portstats import port_stats
from kumo.topology.service import Topology


class LinkBody(Strict):
    peer_id: Id


class BindingBody(Strict):
    host_id: Id
    interface_name: InterfaceName


class MemberBody(Strict):
    ip_address: IPv4


def add_port_routes(router: APIRouter, topo: Topology) -> None:
    @router.post("/ports/{id}/link", tags=["ports"], summary="Link two ports (interior)")
    async def link(id: str, body: LinkBody) -> dict[str, Any]:
        return await run_in_threadpool(topo.link, id, body.peer_id)

    @router.delete("/ports/{id}/link", tags=["ports"], summary="Unlink a port and its peer")
    async def unlink(id: str) -> dict[str, Any]:
        return await run_in_threadpool(topo.unlink, id)

    @router.get("/ports/{id}/stats", tags=["ports"], summary="The port's traffic, drops and upcalls, from its agent")
    async def stats(id: str) -> dict[str, Any]:
        return await run_in_threadpool(lambda: port_stats(topo.store, topo.get("ports", id)))

    @router.put("/ports/{id}/binding", tags=["ports"], summary="Bind a port to a host interface (exterior)")
    async def bind(id: str, body: BindingBody) -> dict[str, Any]:
        return await run_in_threadpool(topo.bind, id, body.host_id, body.interface_name)

    @router.delete("/ports/{id}/binding", tags=["ports"], summary="Unbind a port")
    async def unbind(id: str) -> dict[str, Any]:
        return await run_in_threadpool(topo.unbind, id)

    @router.get("/bridges/{id}/mac_table", tags=["bridges"], summary="Learned MAC entries of a bridge")
    async def mac_table(id: str) -> list[dict[str, Any]]:
        def work() -> list[dict[str, Any]]:
            topo.get("bridges", id)
            return state.mac_table(topo.store, id)

        return await run_in_threadpool(work)

    @router.get("/routers/{id}/arp_table", tags=["routers"], summary="Learned ARP entries of a router")
    async def arp_table(id: str) -> list[dict[str, Any]]:
        def work() -> list[dict[str, Any]]:
            topo.get("routers", id)
            return state.arp_table(topo.store, id)

        return await run_in_threadpool(work)

    @router.get("/tunnel_zones/{id}/members", tags=["tunnel_zones"], summary="Members of a tunnel zone")
    async def list_members(id: str) -> list[dict[str, Any]]:
        def work() -> list[dict[str, Any]]:
            topo.get("tunnel_zones", id)
            return topo.list("tunnel_zone_members", tunnel_zone_id=id)

        return await run_in_threadpool(work)

    @router.put("/tunnel_zones/{id}/members/{host_id}", tags=["tunnel_zones"], summary="Add or change a member")
    async def put_member(id: str, host_id: Id, body: MemberBody) -> dict[str, Any]:
        return await run_in_threadpool(topo.put_member, id, host_id, body.ip_address)

    @router.get("/tunnel_zones/{id}/members/{host_id}", tags=["tunnel_zones"], summary="Show a member")
    async def get_member(id: str, host_id: str) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            topo.get("tunnel_zones", id)
            return topo.get("tunnel_zone_members", topo.member_id(id, host_id))

        return await run_in_threadpool(work)

    @router.delete(
        "/tunnel_zones/{id}/members/{host_id}",
        tags=["tunnel_zones"],
        status_code=204,
        summary="Remove a member",
    )
    async def delete_member(id: str, host_id: str) -> Response:
        await run_in_threadpool(topo.delete_member, id, host_id)
        return Response(status_code=204)
