"""Serving the REST API with uvicorn: `kumo api` (any store) and `kumo up` (embedded store)."""

from __future__ import annotations

import ipaddress
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from kumo.agent.run import AgentOptions
from kumo.api import create_app
from kumo.topology.errors import InvalidInput
from kumo.topology.store import open_store
from kumo.topology.store.base import Store
from kumo.topology.store.urls import redact
from kumo.topology.tokens import any_token

log = logging.getLogger("kumo")

DEFAULT_LISTEN = "127.0.0.1:8181"
DEFAULT_STORE_TIMEOUT = 2.0  # seconds an API request waits for ZooKeeper before it is answered 503


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"--listen {listen!r}: use ADDRESS:PORT, for example {DEFAULT_LISTEN}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Security:
    """How the API server lets clients in (`kumo api`/`kumo up` options)."""

    auth: bool = False  # tokens required on loopback too (beyond loopback they always are)
    insecure_no_auth: bool = False  # serve without tokens, whatever the address (said at every start)
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def wants_auth(self, host: str) -> bool:
        if self.insecure_no_auth:
            return False
        return self.auth or not _loopback(host)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_security(security: Security, store: Store, host: str, listen: str) -> bool:
    """Whether tokens are required; refuses (InvalidInput) to serve beyond loopback without them."""
    if (security.tls_cert is None) != (security.tls_key is None):
        raise InvalidInput("--tls-cert and --tls-key go together: give both (a PEM certificate and its key)")
    auth = security.wants_auth(host)
    if security.insecure_no_auth:
        log.warning("the REST API on %s takes requests from anyone who can reach it (--insecure-no-auth)", listen)
    elif auth and not any_token(store):
        raise InvalidInput(
            f"--listen {listen}: the API requires tokens here and the store holds none. Create the first with "
            "`kumo token create --store STORE_URL --role admin` (it is shown once; clients send it as KUMO_TOKEN), "
            "then start again; or pass --insecure-no-auth to serve without authentication"
        )
    return auth


def _stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM ends the server as SIGINT does: through `serve`'s cleanup (the agent's stop: its health checker
    namespaces, its control socket, its BGP speakers), and with exit status 0 as systemd expects of a stop.
    uvicorn handles SIGTERM while it runs, then raises it again once it has shut down: without this handler
    that second SIGTERM killed the process before the cleanup."""
    raise SystemExit(0)


def serve(
    store_url: str,
    listen: str = DEFAULT_LISTEN,
    banner: str | None = None,
    agent_state_dir: Path | None = None,
    agent_options: AgentOptions | None = None,
    store_timeout: float | None = DEFAULT_STORE_TIMEOUT,
    security: Security | None = None,
) -> None:
    """Serve the API until SIGINT/SIGTERM; with `agent_state_dir`, this host's agent runs in the same process
    on the same store (`kumo up`)."""
    host, port = parse_listen(listen)
    security = security or Security()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = open_store(store_url, call_timeout=store_timeout)
    agent = None
    try:
        auth = _check_security(security, store, host, listen)
        app = create_app(store, auth=auth)  # (before the agent: what exists when it starts is frozen out of the GC)
        if agent_state_dir is not None:
            from kumo.agent.run import start_agent

            agent = start_agent(store, agent_state_dir, agent_options or AgentOptions())
        if banner:
            log.info("%s", banner)
        scheme = "https" if security.tls_cert else "http"
        how = "tokens required" if auth else "no authentication"
        log.info("REST API on %s://%s:%d/v1 (store %s; %s)", scheme, host, port, redact(store_url), how)
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            ssl_certfile=str(security.tls_cert) if security.tls_cert else None,
            ssl_keyfile=str(security.tls_key) if security.tls_key else None,
        )
    finally:
        if agent is not None:
            agent.stop()
        store.close()
