"""Running the agent as a process: `kumo agent` alone, or inside `kumo up` beside the API."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kumo.datapath.layout import (
    DEFAULT_MAX_MASKS_PER_PORT,
    DEFAULT_STORM_UPCALL_RATE,
    DEFAULT_UPCALL_BURST,
    DEFAULT_UPCALL_RATE,
)
from kumo.topology.errors import KumoError, StoreUnavailable
from kumo.topology.store.base import Store
from kumo.topology.store.urls import redact

if TYPE_CHECKING:
    from kumo.agent.agent import Agent

log = logging.getLogger("kumo.agent")


@dataclass(frozen=True)
class AgentOptions:
    """What an operator tunes (`kumo up` and `kumo agent` options of the same names)."""

    idle_timeout: float = 60.0  # seconds before an unused flow is removed
    stateful_idle_timeout: float = 30.0  # the same for flows that created conntrack/NAT state
    max_flows: int = 100_000  # kernel flows beyond this: the oldest go
    upcall_rate: int = DEFAULT_UPCALL_RATE  # upcalls per second per VM interface (BPF token bucket)
    upcall_burst: int = DEFAULT_UPCALL_BURST
    storm_upcall_rate: int = DEFAULT_STORM_UPCALL_RATE  # upcalls/s of a VM interface that storms (0: no holding)
    max_masks_per_port: int = DEFAULT_MAX_MASKS_PER_PORT  # megaflow masks one VM interface may use (0: none)
    metrics_listen: str | None = None  # ADDRESS:PORT of the Prometheus metrics (kumo.agent.metrics)

    def agent(
        self, store: Store, host_id: str, state_dir: Path, tunnel_ip: str | None = None, flow_state: str = "local"
    ) -> Agent:
        from kumo.agent.agent import Agent
        from kumo.datapath.datapath import Datapath
        from kumo.flowstate.redis import RedisFlowState

        return Agent(
            store,
            host_id,
            state_dir,
            idle_timeout=self.idle_timeout,
            stateful_idle_timeout=self.stateful_idle_timeout,
            max_flows=self.max_flows,
            max_masks_per_port=self.max_masks_per_port,
            metrics_listen=self.metrics_listen,
            datapath=Datapath(self.upcall_rate, self.upcall_burst, self.storm_upcall_rate),
            tunnel_ip=tunnel_ip,
            flow_state=RedisFlowState(flow_state, ttl=self.stateful_idle_timeout * 2)
            if flow_state != "local"
            else None,
        )


class AgentNeedsRoot(KumoError):
    status = 400
    code = "agent_needs_root"


START_RETRY_FIRST_S, START_RETRY_MAX_S = 0.5, 10.0  # back-off of a start the store does not answer


def host_id_for(state_dir: Path, given: str | None = None) -> str:
    """The agent's host id: `--host-id`, or one generated once and kept in <state-dir>/host_id."""
    path = state_dir / "host_id"
    if given:
        return given
    if path.exists():
        return path.read_text().strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    new = str(uuid.uuid4())
    path.write_text(new + "\n")
    return new


def check_privileges() -> None:
    if os.geteuid() != 0:
        raise AgentNeedsRoot(
            "the agent loads eBPF programs and attaches them to interfaces: run it as root "
            "(or `kumo up --no-agent` for the API alone)"
        )


def start_agent(store: Store, state_dir: Path, options: AgentOptions, host_id: str | None = None) -> Agent:
    check_privileges()
    agent = options.agent(store, host_id_for(state_dir, host_id), state_dir)
    agent.start()
    return agent


def check_flow_state_url(url: str) -> None:
    if url != "local" and not url.startswith(("redis://", "rediss://")):
        raise KumoError(
            f"--flow-state {redact(url)!r}: use `local` (this agent's own tables), or redis://[:PASSWORD@]HOST:PORT/DB "
            "or rediss://... (TLS), shared by every host",
            code="bad_flow_state",
        )


def run_agent(
    store_url: str,
    state_dir: Path,
    host_id: str | None,
    options: AgentOptions,
    tunnel_ip: str | None = None,
    flow_state: str = "local",
) -> None:
    """`kumo agent`: serve until SIGINT/SIGTERM; kernel flows stay behind and keep forwarding."""
    from kumo.topology.store import open_store

    if store_url.startswith("sqlite:"):
        raise KumoError(
            "an agent on the embedded SQLite store runs inside `kumo up` (that store's watches are in-process); "
            "for separate agents use --store zookeeper://HOST:PORT/CHROOT",
            code="embedded_store",
        )
    check_flow_state_url(flow_state)
    if tunnel_ip is not None:
        try:
            ipaddress.IPv4Address(tunnel_ip)
        except ValueError:
            raise KumoError(
                f"--tunnel-ip {tunnel_ip!r} is not an IPv4 address: give this host's underlay address, e.g. 10.0.0.5",
                code="bad_tunnel_ip",
            ) from None
    check_privileges()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    host = host_id_for(state_dir, host_id)
    started = start_through_outages(
        lambda: open_store(store_url), lambda store: options.agent(store, host, state_dir, tunnel_ip, flow_state), done
    )
    if started is None:
        return  # asked to stop before the store ever answered
    store, agent = started
    try:
        done.wait()
    finally:
        agent.stop()
        store.close()


def start_through_outages(
    open_it: Callable[[], Store], make: Callable[[Store], Agent], done: threading.Event
) -> tuple[Store, Agent] | None:
    """Open the store and start the agent, riding through a store outage the way a running agent does: a
    store that does not answer (down, no quorum, a leader election) is tried again with back-off, logged,
    until it does or the operator stops the agent (None). Anything else is an error and goes up."""
    delay = START_RETRY_FIRST_S
    store: Store | None = None
    while not done.is_set():
        agent: Agent | None = None
        try:
            store = store or open_it()
            agent = make(store)
            agent.start()
            return store, agent
        except StoreUnavailable as exc:
            if agent is not None:
                agent.abandon_start()
            log.warning("the store is unavailable while the agent starts (%s); trying again in %.1f s", exc, delay)
        done.wait(delay)
        delay = min(delay * 2, START_RETRY_MAX_S)
    if store is not None:
        store.close()
    return None
