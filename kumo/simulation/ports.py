"""Ports: admin state and filters as a packet enters a device through a port or leaves through one;
exterior ports deliver, interior ports hand the packet to their peer (and its device)."""

from __future__ import annotations

from collections.abc import Callable

from kumo.simulation.chains import ChainVerdict, run_chain
from kumo.simulation.context import Context
from kumo.simulation.pipeline import Stage
from kumo.simulation.result import Reason, Verdict
from kumo.simulation.view import PortView


def chain_drop(ctx: Context, verdict: ChainVerdict) -> Reason:
    if ctx.chain_loop:
        return Reason.CHAIN_LOOP
    if ctx.nat_exhausted:
        return Reason.NAT_EXHAUSTED
    return Reason.CHAIN_REJECT if verdict is ChainVerdict.REJECT else Reason.CHAIN_DROP


def enter(ctx: Context, port: PortView) -> None:
    """The packet enters the device behind `port`: the port must be up and its inbound filter accept."""
    ctx.tags.add(port.tag)
    if not port.up:
        ctx.step(port["id"], "port", Stage.PORT_ADMIN, "port is administratively down: drop")
        raise ctx.finish(Verdict.DROP, Reason.PORT_ADMIN_DOWN)
    ctx.ingress_port = port["id"]
    ctx.device = port["device_id"]
    ctx.egress_port = None
    if ctx.tracing:
        ctx.step(port["id"], "port", Stage.PORT_ADMIN, f"enter {port['device_id']} through this port")
    filter_or_drop(ctx, port.inbound, port["id"], "port", Stage.PORT_INBOUND_FILTER)


def filter_or_drop(
    ctx: Context,
    chain_id: str | None,
    owner_id: str,
    owner_type: str,
    stage: str,
    on_reject: Callable[[], None] | None = None,
) -> None:
    """A filter the packet must pass to go on: unless it accepts, the walk ends in a drop with the reason
    (after `on_reject`, e.g. a router's ICMP error, when a rule rejected)."""
    if not chain_id:
        return
    verdict = run_chain(ctx, chain_id, owner_id, owner_type, stage)
    if verdict is ChainVerdict.ACCEPT:
        return
    if verdict is ChainVerdict.REJECT and on_reject is not None:
        on_reject()
    raise ctx.finish(Verdict.DROP, chain_drop(ctx, verdict))


def leave(ctx: Context, port: PortView) -> bool:
    """The packet leaves through `port`: True when the port accepts it (its outbound filter)."""
    ctx.tags.add(port.tag)
    if not port.up:
        ctx.step(port["id"], "port", Stage.PORT_ADMIN, "port is administratively down: not sent here")
        return False
    return outbound_filter(ctx, port["id"], port.outbound, port["id"], "port", Stage.PORT_OUTBOUND_FILTER)


def outbound_filter(
    ctx: Context, egress_port_id: str, chain_id: str | None, owner_id: str, owner_type: str, stage: str
) -> bool:
    """A filter on the way out through `egress_port_id`; False (with the reason kept) when it refuses."""
    ctx.egress_port = egress_port_id
    if not chain_id:
        return True
    verdict = run_chain(ctx, chain_id, owner_id, owner_type, stage)
    if verdict is not ChainVerdict.ACCEPT:
        ctx.last_drop = chain_drop(ctx, verdict)
        return False
    return True
