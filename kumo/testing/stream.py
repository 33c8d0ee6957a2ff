"""A steady TCP stream for tests, run inside VM namespaces: `server PORT FILE` records the time of the last
byte received in FILE; `client HOST PORT` sends 100 bytes every 10 ms (bounded: 120 s)."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path


def last_received(path: Path) -> float:
    """The time a server recorded in `path` (0 before the first bytes)."""
    try:
        return float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def server(port: int, path: str) -> None:
    with socket.create_server(("0.0.0.0", port)) as listener:
        listener.settimeout(120)
        while True:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(120)
                while data := conn.recv(65536):
                    with open(path + ".tmp", "w") as f:
                        f.write(f"{time.time()} {len(data)}\n")
                    os.replace(path + ".tmp", path)  # readers never see a half-written file


def client(host: str, port: int) -> None:
    deadline = time.monotonic() + 120
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.settimeout(None)
        while time.monotonic() < deadline:
            conn.sendall(b"x" * 100)
            time.sleep(0.01)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]), sys.argv[3])
    else:
        client(sys.argv[2], int(sys.argv[3]))
