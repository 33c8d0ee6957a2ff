"""Run the REST API in this process on a free loopback port (demo, tests, bench); always stopped."""

from __future__ import annotations

import threading
import time
from types import TracebackType

import uvicorn

from kumo.api import create_app
from kumo.testing.common import free_port
from kumo.topology.store.base import Store


class ApiServer:
    """`with ApiServer(store) as api: Client(api.url)`."""

    def __init__(self, store: Store, start_timeout: float = 15.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(store),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"api-{self.port}", daemon=True)
        self.start_timeout = start_timeout

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.server.should_exit = True
                raise RuntimeError(f"the API did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
