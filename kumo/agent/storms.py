"""Storm control: a VM interface that keeps offering more new flows than its upcall limit is held to a much
lower rate until it calms down.

The BPF token bucket caps each interface at the host's upcall rate (`--upcall-rate`), but a VM opening flows
as fast as it can would then take that whole rate, and the agent's CPU with it, for as long as it likes; on
a small host that CPU is the other VMs', and its upcalls queue ahead of theirs in the ring. So the program
watches each bound interface (bpf/port_ingress.c, storm_control): one whose misses come faster than its
limit for STORM_ENTER_MS storms, and is held to the storm rate (`--storm-upcall-rate`) until they have come
at or under the limit for STORM_LEAVE_MS. The kernel decides, at once and even while the agent is busy or
restarting; the agent only reads the state back, logs it and reports it (`kumo agent stats`). An interface
that stays under its limit is never held, however busy.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Any

from kumo.agent.view import HostView
from kumo.datapath.datapath import Datapath
from kumo.datapath.layout import STORM_ENTER_MS, STORM_LEAVE_MS

log = logging.getLogger("kumo.agent")

STORM_SAMPLE_PERIOD = 0.25  # seconds between two reads of the interfaces' state by the agent


@dataclass(frozen=True)
class PortState:
    """What the program keeps for one interface (the fields of struct kumo_port_limit the agent needs)."""

    offered: int  # misses that reached the rate limiter, ever
    storming: bool  # held to the storm rate
    storms: int  # times it was held


@dataclass
class _Seen:
    state: PortState
    at: float
    active_at: float  # when its offered count last grew
    rate: float = 0.0  # offered per second between the last two samples
    held_since: float | None = None


class StormWatch:
    """The agent's view of the interfaces' storm state, from samples of what the program keeps.

    An interface the program still marks as storming but that has offered nothing for the leave time counts
    as let go: the program lets it go at its next miss (its window then shows it calm), which may never
    come."""

    def __init__(self, limit: int, storm_rate: int, leave_after: float = STORM_LEAVE_MS / 1000) -> None:
        self.limit = limit
        self.storm_rate = storm_rate
        self.leave_after = leave_after
        self._seen: dict[int, _Seen] = {}

    @property
    def enabled(self) -> bool:
        """Off when there is no limit to exceed, when asked (storm rate 0), or when holding would not lower
        the rate (the program then does not watch)."""
        return 0 < self.storm_rate < self.limit

    def observe(self, now: float, states: dict[int, PortState]) -> tuple[dict[int, int], list[int]]:
        """Take each interface's state at `now`: the interfaces that started storming since the last sample
        (with how many times), and those let go. Interfaces missing from `states` are forgotten."""
        started: dict[int, int] = {}
        ended: list[int] = []
        for gone in self._seen.keys() - states.keys():
            del self._seen[gone]
        for ifindex, state in states.items():
            seen = self._seen.get(ifindex)
            if seen is None:
                seen = self._seen[ifindex] = _Seen(PortState(0, False, 0), now, now)
            if now > seen.at:
                seen.rate = (state.offered - seen.state.offered) / (now - seen.at)
            if state.offered != seen.state.offered:
                seen.active_at = now
            if state.storms > seen.state.storms:
                started[ifindex] = state.storms - seen.state.storms
            held = state.storming and now - seen.active_at < self.leave_after
            if held and seen.held_since is None:
                seen.held_since = now
            elif not held and seen.held_since is not None:
                seen.held_since = None
                ended.append(ifindex)
            seen.state, seen.at = state, now
        return started, ended

    def held(self, now: float) -> dict[int, dict[str, float]]:
        """The interfaces held now: their offered rate at the last sample, and for how long they have been held."""
        return {
            ifindex: {"offered_per_s": round(s.rate), "held_s": round(now - s.held_since, 1)}
            for ifindex, s in self._seen.items()
            if s.held_since is not None
        }

    def offered_per_s(self, ifindex: int) -> float:
        seen = self._seen.get(ifindex)
        return seen.rate if seen is not None else 0.0


class StormMonitor:
    """The packet thread's side: samples the program's per-interface state every STORM_SAMPLE_PERIOD, logs
    and counts storms as they start and end, and knows which interfaces are held (their upcalls are served
    last in a round: kumo.agent.rounds)."""

    def __init__(self, datapath: Datapath, view: HostView, counters: collections.Counter[str]) -> None:
        self.datapath = datapath
        self.view = view
        self.counters = counters
        self.watch = StormWatch(datapath.upcall_rate, datapath.storm_rate)
        self.held_ifindexes: set[int] = set()  # interfaces storm control held at the last sample
        self._next_sample = 0.0

    def sample_if_due(self, now: float) -> None:
        if now >= self._next_sample and self.watch.enabled:
            self._sample(now)
            self._next_sample = now + STORM_SAMPLE_PERIOD

    def _sample(self, now: float) -> None:
        """Log and count the interfaces the program starts or stops holding to the storm rate."""
        watch, port_of_ifindex = self.watch, self.view.port_of_ifindex
        limits = self.datapath.port_limits(list(port_of_ifindex))
        states = {i: PortState(e.offered, bool(e.storming_since_ns), e.storms) for i, e in limits.items()}
        started, ended = watch.observe(now, states)
        self.held_ifindexes = set(watch.held(now))
        for ifindex, times in started.items():
            self.counters["storms_started"] += times
            port_id = port_of_ifindex.get(ifindex, "")
            log.warning(
                "port %s (%s) offers %d new flows/s, over the limit of %d/s for %d ms: held to %d upcalls/s "
                "until it has stayed at or under the limit for %d s",
                port_id,
                self.view.bindings.get(port_id, "?"),
                watch.offered_per_s(ifindex),
                watch.limit,
                STORM_ENTER_MS,
                watch.storm_rate,
                STORM_LEAVE_MS // 1000,
            )
        for ifindex in ended:
            self.counters["storms_ended"] += 1
            log.info("port %s: calm again, back to %d upcalls/s", port_of_ifindex.get(ifindex), watch.limit)

    def report(self, now: float) -> dict[str, Any]:
        """What `kumo agent stats` shows under storm_control."""
        watch = self.watch
        held, names = watch.held(now), self.view.interface_names()
        return {
            "upcall_rate": watch.limit,
            "storm_upcall_rate": watch.storm_rate if watch.enabled else 0,  # 0: off
            "held": {
                self.view.port_of_ifindex.get(i, str(i)): {**h, "interface": names.get(i, "")} for i, h in held.items()
            },
        }
