"""Serving the REST API with uvicorn: `kumo api` (any store) and `kumo up` (embedded store)."""

from __future__ import annotations

import logging

import uvicorn

from kumo.api import create_app
from kumo.topology.errors import InvalidInput
from kumo.topology.store import open_store

DEFAULT_LISTEN = "127.0.0.1:8181"


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"--listen {listen!r}: use ADDRESS:PORT, for example {DEFAULT_LISTEN}")
    return host.strip("[]"), int(port)


def serve(store_url: str, listen: str = DEFAULT_LISTEN, banner: str | None = None) -> None:
    host, port = parse_listen(listen)
    store = open_store(store_url)
    try:
        app = create_app(store)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if banner:
            logging.getLogger("kumo").info("%s", banner)
        logging.getLogger("kumo").info("REST API on http://%s:%d/v1 (store %s)", host, port, store_url)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        store.close()
