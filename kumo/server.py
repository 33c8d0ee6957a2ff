"""Serving the REST API with uvicorn: `kumo api` (any store) and `kumo up` (embedded store)."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from kumo.agent.run import AgentOptions
from kumo.api import create_app
from kumo.topology.errors import InvalidInput
from kumo.topology.store import open_store

DEFAULT_LISTEN = "127.0.0.1:8181"
DEFAULT_STORE_TIMEOUT = 2.0  # seconds an API request waits for ZooKeeper before it is answered 503


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"--listen {listen!r}: use ADDRESS:PORT, for example {DEFAULT_LISTEN}")
    return host.strip("[]"), int(port)


def serve(
    store_url: str,
    listen: str = DEFAULT_LISTEN,
    banner: str | None = None,
    agent_state_dir: Path | None = None,
    agent_options: AgentOptions | None = None,
    store_timeout: float | None = DEFAULT_STORE_TIMEOUT,
) -> None:
    """Serve the API until SIGINT/SIGTERM; with `agent_state_dir`, this host's agent runs in the same process
    on the same store (`kumo up`)."""
    host, port = parse_listen(listen)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = open_store(store_url, call_timeout=store_timeout)
    agent = None
    try:
        app = create_app(store)  # (before the agent: what exists when it starts is frozen out of the collector)
        if agent_state_dir is not None:
            from kumo.agent.run import start_agent

            agent = start_agent(store, agent_state_dir, agent_options or AgentOptions())
        if banner:
            logging.getLogger("kumo").info("%s", banner)
        logging.getLogger("kumo").info("REST API on http://%s:%d/v1 (store %s)", host, port, store_url)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        if agent is not None:
            agent.stop()
        store.close()
