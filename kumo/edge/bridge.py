"""The helper ExaBGP runs as its API process (`run ... -m kumo.edge.bridge SOCKET`): ExaBGP writes its JSON
messages to the helper's stdin and reads commands from its stdout. The helper carries both to and from the
agent over the Unix socket the agent listens on. (ExaBGP starts its API processes itself, so the agent
cannot hold their pipes directly.) It exits when either side closes; ExaBGP then stops the peer's session.
(That ExaBGP ends with the agent is kumo.edge.supervise's job.)"""

from __future__ import annotations

import socket
import sys
import threading
import time

CONNECT_TRIES = 50  # x 0.1 s: the agent listens before it starts ExaBGP, this is only for a slow start


def _connect(path: str) -> socket.socket:
    for _ in range(CONNECT_TRIES):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            time.sleep(0.1)
    raise SystemExit(f"kumo.edge.bridge: the agent is not listening on {path}")


def _to_agent(sock: socket.socket) -> None:
    try:
        for line in sys.stdin.buffer:
            sock.sendall(line)
    finally:
        sock.shutdown(socket.SHUT_RDWR)


def main() -> None:
    sock = _connect(sys.argv[1])
    threading.Thread(target=_to_agent, args=(sock,), daemon=True).start()
    with sock.makefile("rb") as commands:
        for line in commands:
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
