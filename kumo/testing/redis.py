"""Run a throw-away Redis 7 (Debian's `redis-server`): on a free loopback port, or inside a network namespace
on a given address (multi-host tests). No persistence; stop() and start() for outage tests."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from kumo.testing.common import free_port, stop_process, wait_ready


class RedisServer:
    def __init__(
        self,
        address: str = "127.0.0.1",
        netns: str | None = None,
        port: int | None = None,
        password: str | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """`password`: AUTH required. `tls` (certificate, key), PEM, the certificate its own CA: TLS only."""
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed: `make setup` installs Debian's redis-server")
        self.address = address
        self.netns = netns
        self.password = password  # AUTH required when set
        self.tls = tls
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="kumo-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls is not None:
            return f"rediss://{auth}{self.address}:{self.port}/0?ssl_ca_certs={self.tls[0]}"
        return f"redis://{auth}{self.address}:{self.port}/0"

    def start(self) -> None:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        command = ["redis-server", "--port", str(self.port), "--bind", self.address, "--save", "", "--appendonly", "no"]
        if self.tls is not None:
            cert, key = (str(p) for p in self.tls)
            command[1:3] = ["--port", "0", "--tls-port", str(self.port)]
            command += ["--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert]
            command += ["--tls-auth-clients", "no"]
        command += ["--protected-mode", "no"]  # (it listens on a test namespace's address)
        if self.password:
            command += ["--requirepass", self.password]
        self.proc = subprocess.Popen(
            [*prefix, *command, "--dir", str(self.dir)],
            stdout=open(self.dir / "redis.log", "wb"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_ready(self.proc, self._answers, 20.0, f"redis-server on {self.address}:{self.port}", self._log)
        except RuntimeError:
            self.stop()
            raise

    def _log(self) -> str:
        return (self.dir / "redis.log").read_text(errors="replace")

    def _ping(self) -> bool:
        with socket.create_connection((self.address, self.port), timeout=1) as plain:
            s = plain
            if self.tls is not None:
                s = ssl.create_default_context(cafile=str(self.tls[0])).wrap_socket(plain, server_hostname=self.address)
            if self.password:
                s.sendall(f"AUTH {self.password}\r\n".encode())
                if not s.recv(64).startswith(b"+OK"):
                    return False
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def _answers(self) -> bool:
        if self.netns is None:
            return self._ping()
        from kumo.testing.netns import inside

        with inside(self.netns):
            return self._ping()

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self.cleanup()
