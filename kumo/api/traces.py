"""POST /v1/traces: the simulated journey of a described packet (pure: nothing is sent or written)."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import Field

from kumo.simulation.trace import trace
from kumo.topology.errors import NotFound
from kumo.topology.fields import MAC, Id, IPv4, L4Port, Strict, VlanId
from kumo.topology.service import Topology


class TracePacket(Strict):
    eth_src: MAC | None = None
    eth_dst: MAC | None = None
    vlan_id: VlanId | None = None
    ip_src: IPv4
    ip_dst: IPv4
    proto: Literal["tcp", "udp", "icmp"] | Annotated[int, Field(ge=0, le=255)] | None = None
    src_port: L4Port | None = None
    dst_port: L4Port | None = None
    icmp_type: int | None = Field(default=None, ge=0, le=255)
    icmp_code: int | None = Field(default=None, ge=0, le=255)
    ttl: int = Field(default=64, ge=1, le=255)
    fragment: Literal["none", "first", "later"] = "none"


class TraceRequest(Strict):
    ingress_port_id: Id
    packet: TracePacket


def add_trace_routes(router: APIRouter, topo: Topology) -> None:
    @router.post("/traces", tags=["traces"], summary="Simulate a packet and show its journey")
    async def post_trace(body: TraceRequest) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            try:
                topo.get("ports", body.ingress_port_id)  # (a tenant token traces from its own ports only)
            except NotFound:
                raise NotFound(
                    f"ingress_port_id: no port with id {body.ingress_port_id}", code="unknown_reference"
                ) from None
            return trace(topo.store, body.ingress_port_id, body.packet.model_dump())

        return await run_in_threadpool(work)
