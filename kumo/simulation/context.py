"""The state of one walk: the packet's fields, where it is, what it depended on, what it produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kumo.packet.flowmatch import FlowMatch
from kumo.simulation.result import Generated, LearnWrite, Reason, StateWrite, TraceStep, Verdict
from kumo.simulation.view import FlowState, LearnedTables, Snapshot

MAX_DEVICES = 12  # loop guard: a walk that enters more devices than this is dropped


class Finished(Exception):
    """Raised by a stage to end the walk with a verdict (drop, reply, park, ...)."""

    def __init__(self, verdict: Verdict, reason: Reason) -> None:
        super().__init__(reason.value)
        self.verdict = verdict
        self.reason = reason


@dataclass(slots=True)
class Context:
    match: FlowMatch
    topology: Snapshot
    learned: LearnedTables
    flow_state: FlowState
    frame: bytes | None = None  # the original frame, for replies and ICMP quotes (None in traces)
    tracing: bool = True  # False on the agent's hot path: no step text is built
    devices_entered: int = 0
    traversed: list[str] = field(default_factory=list)  # device ids, for traversed_device conditions
    tags: set[Any] = field(default_factory=set)  # strings like "port:<id>", or (kind, key) for state keys
    trace: list[TraceStep] = field(default_factory=list)
    state_writes: list[StateWrite] = field(default_factory=list)
    learn_writes: list[LearnWrite] = field(default_factory=list)
    generated: list[Generated] = field(default_factory=list)
    ttl_decrement: int = 0
    ingress_port: str = ""  # the port through which the packet entered the current device
    device: str = ""  # the device being entered or crossed (its ports' filters included): where conntrack looks
    egress_port: str | None = None  # known while outbound chains run
    park_until: tuple[str, ...] | None = None
    forward_key: tuple[Any, ...] | None = None
    chain_loop: bool = False  # set when a jump would revisit a chain (the drop's reason)
    nat_exhausted: bool = False  # set when SNAT found no free address/port
    flooded: bool = False
    inner_rewrites: dict[str, Any] = field(default_factory=dict)  # of the header quoted in an ICMP error
    path_mtu: int | None = None
    one_off: bool = False  # the result depends on more than the match (e.g. an ICMP error's quote): never cache
    # conntrack queries the kernel could answer (conntrack.tracked_tuple): their devices, the fields read for
    # them without marking, and each device's answer
    ct_devices: set[str] = field(default_factory=set)
    ct_quiet: int = 0
    ct_answers: dict[str, bool] = field(default_factory=dict)
    ct_record: str | None = None  # the device this flow is recorded at as a forward flow
    last_drop: Reason | None = None  # why the last egress port refused the packet

    def step(
        self,
        device_id: str,
        device_type: str,
        stage: str,
        what: str,
        chain_id: str | None = None,
        rule_id: str | None = None,
    ) -> None:
        if not self.tracing:
            return
        self.trace.append(TraceStep(device_id, device_type, stage, what, chain_id, rule_id))

    def finish(self, verdict: Verdict, reason: Reason) -> Finished:
        return Finished(verdict, reason)

    def tag(self, *tags: Any) -> None:
        self.tags.update(tags)
