"""One peer's ExaBGP, a child of the agent inside the uplink's namespace.

The agent listens on a Unix socket before it starts ExaBGP; ExaBGP's API helper (kumo.edge.bridge)
connects to it. Events read from it go to `on_event` on this speaker's reader thread.

ExaBGP runs under kumo.edge.supervise, which the kernel signals when the agent dies (PR_SET_PDEATHSIG),
even by SIGKILL: it stops ExaBGP, whose sessions end with a Cease, and the peers withdraw our routes at
once; the store drops our learned routes with the agent's session."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from kumo.edge import exabgp
from kumo.edge.exabgp import PeerConfig
from kumo.edge.messages import Event, Unreadable, parse

log = logging.getLogger("kumo.edge")

PR_SET_PDEATHSIG = 1


def _signal_on_parent_death() -> None:  # (in the child, between fork and exec: one system call)
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


STOP_GRACE_S = 5.0  # SIGTERM: the supervisor stops ExaBGP (a Cease NOTIFICATION, SIGKILL after 3 s); then SIGKILL


class Speaker:
    def __init__(
        self, peer: PeerConfig, namespace: str, run_dir: Path, on_event: Callable[[PeerConfig, Event], None]
    ) -> None:
        self.peer = peer
        self.namespace = namespace
        self.on_event = on_event
        short = peer.peer_id[:8]
        self.socket_path = run_dir / f"bgp-{short}.sock"
        self.config_path = run_dir / f"bgp-{short}.conf"
        self.log_path = run_dir / f"bgp-{short}.log"
        self._listener: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._pending: list[str] = []  # commands sent before the helper connected
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def start(self) -> None:
        """Listen, write the configuration, start ExaBGP. (From a thread that lives as long as the agent: the
        parent-death signal follows the thread that forked.)"""
        command = exabgp.exabgp_command()
        self.socket_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket_path))
        listener.listen(2)
        self._listener = listener
        self.config_path.unlink(missing_ok=True)
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it holds the MD5 password
        with os.fdopen(fd, "w") as config:
            config.write(exabgp.render_config(self.peer, self.socket_path))
        supervised = [sys.executable, "-m", "kumo.edge.supervise", command, str(self.config_path)]
        with open(self.log_path, "ab") as out:
            self._process = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace, *supervised],
                env={**os.environ, **exabgp.environment()},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_signal_on_parent_death,
                start_new_session=True,
            )
        threading.Thread(target=self._accept, name=f"kumo-bgp-{self.peer.peer_id[:8]}", daemon=True).start()

    def _accept(self) -> None:
        listener = self._listener
        while listener is not None and not self._stopping:
            try:
                conn, _ = listener.accept()  # ExaBGP respawns a helper that died: take each in turn
            except OSError:
                return
            with self._lock:
                self._conn = conn
                pending, self._pending = self._pending, []
            for command in pending:
                self.send(command)
            self._read(conn)

    def _read(self, conn: socket.socket) -> None:
        try:
            with conn.makefile("r", encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    if line.strip():
                        self._deliver(parse(line))
        except OSError:
            pass
        with self._lock:
            if self._conn is conn:
                self._conn = None

    def _deliver(self, event: Event) -> None:
        try:
            self.on_event(self.peer, event)
        except Exception:  # a bug in handling one message must not stop reading the session's next ones
            log.exception("BGP peer %s: handling %s failed", self.peer.address, type(event).__name__)
            self.on_event(self.peer, Unreadable("", "the agent failed to handle a message (see its log)"))

    def send(self, command: str) -> None:
        with self._lock:
            conn = self._conn
            if conn is None:
                self._pending.append(command)
                return
        try:
            conn.sendall(command.encode() + b"\n")
        except OSError as exc:
            log.warning("BGP peer %s: command %r not sent: %s", self.peer.address, command, exc)

    def exit_code(self) -> int | None:
        """None while ExaBGP runs."""
        return None if self._process is None else self._process.poll()

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        self._stopping = True
        process = self._process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        for sock in (self._conn, self._listener):
            if sock is not None:
                sock.close()
        self.socket_path.unlink(missing_ok=True)
