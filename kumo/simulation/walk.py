"""simulate(): one packet's walk from its ingress port to exterior ports (or a drop, reply or park).

Pure: it reads the snapshot, the learned tables and the flow state, and returns every effect in the
result (actions, flow-state writes, learned entries, generated packets) for the agent to apply.
"""

from __future__ import annotations

from typing import Any

from kumo.packet.flowmatch import BIT, FlowMatch
from kumo.simulation import bridge, conntrack, ports, portsecurity, router
from kumo.simulation.chains import chain_uses_conntrack
from kumo.simulation.context import MAX_DEVICES, Context, Finished
from kumo.simulation.pipeline import Stage
from kumo.simulation.result import KernelConntrack, Reason, SimulationResult, StateWrite, Verdict
from kumo.simulation.view import FlowState, LearnedTables, PortView, Snapshot

Obj = dict[str, Any]
_TTL = BIT["ip_ttl"]


def simulate(
    match: FlowMatch,
    topology: Snapshot,
    learned: LearnedTables,
    flow_state: FlowState,
    frame: bytes | None = None,
    trace: bool = True,
) -> SimulationResult:
    """With trace=False (the agent's hot path) no step text is built; the tags still say why a flow exists."""
    ctx = Context(match, topology, learned, flow_state, frame, tracing=trace)
    port = topology.ports.get(match.peek("in_port"))
    try:
        if port is None:
            ctx.step(match.peek("in_port") or "?", "port", Stage.PORT_ADMIN, "unknown ingress port: drop")
            raise Finished(Verdict.DROP, Reason.UNKNOWN_PORT)
        if port.security is not None:
            portsecurity.check(ctx, port["id"], port.security)
        _record_forward_flow(ctx, port)
        egress = _through_device(ctx, port)
        if not egress:
            raise Finished(Verdict.DROP, ctx.last_drop or Reason.NO_FLOOD_TARGETS)
        verdict = Verdict.OUTPUT if len(egress) == 1 and not ctx.flooded else Verdict.FLOOD
        reason = Reason.FORWARDED if verdict is Verdict.OUTPUT else Reason.FLOODED
    except Finished as done:
        verdict, reason, egress = done.verdict, done.reason, []
    rewrites = match.changed(ignore=_TTL)  # the TTL travels as a relative decrement
    kernel_seen = match.seen  # (before the fields read for conntrack queries are added)
    match.seen |= ctx.ct_quiet  # the wildcard match holds them: the agent's caches stay per connection
    writes = ctx.state_writes if verdict in (Verdict.OUTPUT, Verdict.FLOOD) else []
    result = SimulationResult(
        verdict,
        reason,
        egress,
        rewrites if egress else {},
        ctx.ttl_decrement if egress else 0,
        match.wildcard(),
        ctx.tags,
        writes,
        ctx.learn_writes,
        ctx.generated,
        ctx.park_until,
        ctx.trace,
    )
    result.inner_rewrites = ctx.inner_rewrites if egress else {}
    result.one_off = ctx.one_off
    result.path_mtu = ctx.path_mtu if egress else None
    if len(ctx.ct_devices) == 1:  # (queries at two devices: two answers, more than one key byte holds)
        (device,) = ctx.ct_devices
        if device in ctx.ct_answers:
            record = ctx.ct_record if writes else None  # (a packet not forwarded records nothing)
            result.conntrack = KernelConntrack(device, ctx.ct_answers[device], kernel_seen, record)
    return result


def _record_forward_flow(ctx: Context, port: PortView) -> None:
    """Conntrack: a flow entering a device whose filters use connection state is recorded (unless it is
    itself a reply), so that its replies can be recognised there."""
    device_id = port["device_id"]
    if device_id not in stateful_devices(ctx.topology):
        return
    flow = conntrack.tracked_tuple(ctx, device_id)
    if flow is None:
        return
    if not conntrack.is_return_flow(ctx, device_id):
        ctx.state_writes.append(StateWrite("conntrack", conntrack.forward_key(flow, device_id)))
        ctx.ct_record = device_id


def stateful_devices(snap: Snapshot) -> frozenset[str]:
    """Devices whose own filters, or their ports' filters, use connection state (computed once per snapshot)."""
    if snap.stateful_devices is None:
        stateful = set()
        for device_id, (_, device) in snap.devices.items():
            chains = [device.get("inbound_filter_id"), device.get("outbound_filter_id")]
            for p in snap.device_ports.get(device_id, []):
                chains += [p.get("inbound_filter_id"), p.get("outbound_filter_id")]
            if any(c and chain_uses_conntrack(snap, c) for c in chains):
                stateful.add(device_id)
        snap.stateful_devices = frozenset(stateful)
    return snap.stateful_devices


def _through_device(ctx: Context, in_port: PortView) -> list[str]:
    """Enter the device behind `in_port` and return the exterior ports the packet leaves by."""
    ports.enter(ctx, in_port)
    ctx.devices_entered += 1
    if ctx.devices_entered > MAX_DEVICES:
        ctx.step(in_port["device_id"], "device", Stage.PORT_ADMIN, f"more than {MAX_DEVICES} devices: loop, drop")
        raise Finished(Verdict.DROP, Reason.LOOP_LIMIT)
    found = ctx.topology.devices.get(in_port["device_id"])
    if found is None:
        raise Finished(Verdict.DROP, Reason.UNKNOWN_DEVICE)
    dtype, device = found
    ctx.traversed.append(device["id"])
    if dtype == "bridge":
        how, targets = bridge.process(ctx, device, in_port)
        if how == "flood":
            ctx.flooded = True
        out: list[str] = []
        for port in targets:
            if bridge.egress(ctx, device, port) and ports.leave(ctx, port):
                out += _deliver(ctx, port)
        return out
    port = router.process(ctx, device, in_port)
    if not ports.leave(ctx, port):
        raise Finished(Verdict.DROP, ctx.last_drop or Reason.CHAIN_DROP)
    return _deliver(ctx, port)


def _deliver(ctx: Context, port: PortView) -> list[str]:
    peer = port.peer
    if peer is None:
        if ctx.tracing:
            ctx.step(port["id"], "port", Stage.PORT_DELIVER, "exterior port: deliver")
        return [port["id"]]
    return _through_device(ctx, peer)
