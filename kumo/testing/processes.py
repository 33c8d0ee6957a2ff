"""`kumo api` and `kumo agent` as real processes (inside a network namespace with `prefix`); always stopped
(SIGKILL as a last resort)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import httpx

from kumo.testing.common import free_port, wait_ready


class _KumoProcess:
    """A `kumo ...` child in a session of its own (so that its whole process group can be signalled)."""

    def __init__(self, log_path: Path, prefix: list[str] | None) -> None:
        self.log_path = log_path
        self.prefix = prefix or []  # e.g. ["ip", "netns", "exec", NAME]: run it inside a network namespace
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, args: list[str], ready: Callable[[], bool], timeout: float, what: str) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed on stop
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "kumo.cli.main", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        try:
            wait_ready(self.proc, ready, timeout, what, self.log_path.read_text)
        except RuntimeError:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL: what a crash looks like (no clean shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> int | None:
        """SIGTERM to the process group (SIGKILL after 15 s); its exit status (None if it had to be killed)."""
        status = None
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                status = self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None
        return status


class ApiProcess(_KumoProcess):
    """`kumo api --store URL` (or, with `command=["up", ...]`, `kumo up`) on a free loopback port."""

    def __init__(
        self,
        store_url: str | None,
        log_path: Path,
        port: int | None = None,
        command: list[str] | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        super().__init__(log_path, prefix)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = command or ["api", "--store", str(store_url)]

    def start(self, timeout: float = 20.0) -> ApiProcess:
        def answers() -> bool:
            try:
                return httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200  # (needs no token)
            except httpx.HTTPError:
                return False

        self._spawn([*self.command, "--listen", f"127.0.0.1:{self.port}"], answers, timeout, f"kumo api on {self.url}")
        return self

    def __enter__(self) -> ApiProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class AgentProcess(_KumoProcess):
    """`kumo agent ARGS --state-dir DIR`; ready when its control socket answers. kill() is a crash (kernel
    flows stay), stop() a clean stop."""

    def __init__(self, args: list[str], state_dir: Path, log_path: Path, prefix: list[str] | None = None) -> None:
        super().__init__(log_path, prefix)
        self.args = args
        self.state_dir = state_dir

    def start(self, timeout: float = 60.0) -> AgentProcess:
        from kumo.agent.control import ask

        def answers() -> bool:
            try:
                ask(self.state_dir / "agent.sock", "stats")
                return True
            except Exception:
                return False

        args = ["agent", *self.args, "--state-dir", str(self.state_dir)]
        self._spawn(args, answers, timeout, f"kumo agent {' '.join(self.args)}")
        return self
