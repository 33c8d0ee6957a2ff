"""The agent's control socket (`<state-dir>/agent.sock`): `kumo flows` and `kumo agent stats` ask the
running agent of this host. One JSON request line in, one JSON answer line out."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any, Protocol

from kumo.topology.errors import KumoError


class AgentQueries(Protocol):
    """What the control socket asks of the running agent (kumo.agent.agent.Agent answers)."""

    def describe_flows(self) -> list[dict[str, Any]]: ...

    def stats(self) -> dict[str, Any]: ...


class AgentUnreachable(KumoError):
    status = 503
    code = "agent_unreachable"


class ControlServer:
    def __init__(self, agent: AgentQueries, path: Path) -> None:
        self.agent = agent
        self.path = path
        self._server: socketserver.ThreadingUnixStreamServer | None = None

    def start(self) -> None:
        agent = self.agent

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline()
                try:
                    request = json.loads(line or b"{}")
                    command = request.get("command")
                    if command == "flows":
                        answer: Any = {"flows": agent.describe_flows()}
                    elif command == "stats":
                        answer = {"stats": agent.stats()}
                    else:
                        answer = {"error": f"unknown command {command!r}: use flows or stats"}
                except Exception as exc:  # an answer, never a dropped connection
                    answer = {"error": f"{type(exc).__name__}: {exc}"}
                self.wfile.write(json.dumps(answer, default=str).encode() + b"\n")

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = socketserver.ThreadingUnixStreamServer(str(self.path), Handler)
        self._server.daemon_threads = True
        os.chmod(self.path, 0o600)
        threading.Thread(target=self._server.serve_forever, name="kumo-control", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def ask(path: Path, command: str, timeout: float = 10.0) -> Any:
    """Send one command to the agent listening on `path`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps({"command": command}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise AgentUnreachable(
            f"no agent answers on {path} ({exc.strerror or exc}): is `kumo up` or `kumo agent` running with "
            "this --state-dir?"
        ) from exc
    answer = json.loads(data or b"{}")
    if "error" in answer:
        raise KumoError(f"agent: {answer['error']}")
    return answer[command]
