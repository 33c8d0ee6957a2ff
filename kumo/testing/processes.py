"""Start `kumo api` as a real process on a free loopback port; always stopped (SIGKILL as a last resort)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

import httpx

from kumo.testing.common import free_port, wait_ready


class ApiProcess:
    """`kumo api --store URL` (or, with `command=["up", ...]`, `kumo up`) on a free loopback port."""

    def __init__(
        self,
        store_url: str | None,
        log_path: Path,
        port: int | None = None,
        command: list[str] | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = command or ["api", "--store", str(store_url)]
        self.log_path = log_path
        self.prefix = prefix or []  # e.g. ["ip", "netns", "exec", NAME]: run it inside a network namespace
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> ApiProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed on stop
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "kumo.cli.main", *self.command, "--listen", f"127.0.0.1:{self.port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

        def answers() -> bool:
            try:
                return httpx.get(f"{self.url}/v1/", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_ready(self.proc, answers, timeout, f"kumo api on {self.url}", self.log_path.read_text)
        except RuntimeError:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL: what a crash looks like (no clean shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def __enter__(self) -> ApiProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class AgentProcess:
    """`kumo agent` as a real process (inside a host namespace with `prefix`); ready when its control socket
    answers. kill() is a crash (SIGKILL: kernel flows stay), stop() a clean stop."""

    def __init__(self, args: list[str], state_dir: Path, log_path: Path, prefix: list[str] | None = None) -> None:
        self.args = args
        self.state_dir = state_dir
        self.log_path = log_path
        self.prefix = prefix or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> AgentProcess:
        from kumo.agent.control import ask

        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed on stop
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-m",
                "kumo.cli.main",
                "agent",
                *self.args,
                "--state-dir",
                str(self.state_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

        def answers() -> bool:
            try:
                ask(self.state_dir / "agent.sock", "stats")
                return True
            except Exception:
                return False

        try:
            wait_ready(self.proc, answers, timeout, f"kumo agent {' '.join(self.args)}", self.log_path.read_text)
        except RuntimeError:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None
