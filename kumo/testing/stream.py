"""Steady streams for tests, run inside VM namespaces (`python -m kumo.testing.stream ...`):

- `server PORT FILE` (TCP) records the time of the last byte received in FILE; `client HOST PORT` sends
  100 bytes every 10 ms (bounded: 120 s);
- `udp-echo PORT [BIND]` answers every UDP datagram (bounded: 120 s without one);
- `udp-probe HOST PORT SECONDS [BIND]` sends a numbered datagram every 20 ms for SECONDS and prints, as JSON,
  the times (relative to its start) at which answers came back."""

from __future__ import annotations

import contextlib
import itertools
import json
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


def udp_echo(port: int, bind: str = "0.0.0.0") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((bind, port))  # (bound to an address, its answers come from that address)
        sock.settimeout(120)
        while True:
            data, peer = sock.recvfrom(2048)
            sock.sendto(data, peer)


def udp_probe(host: str, port: int, seconds: float, bind: str = "0.0.0.0") -> None:
    answers = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((bind, 0))
        sock.settimeout(0.02)
        start = time.monotonic()
        n = 0
        while (now := time.monotonic() - start) < seconds:
            with contextlib.suppress(OSError):  # (no route for a moment: a VM's interface moving hosts)
                sock.sendto(str(n).encode(), (host, port))
            n += 1
            while time.monotonic() - start < now + 0.02:
                try:
                    sock.recv(2048)
                    answers.append(round(time.monotonic() - start, 3))
                except OSError:
                    break
    print(json.dumps({"sent": n, "answers": answers}))


def longest_silence(answers: list[float], seconds: float) -> float:
    """The longest time without an answer, from 0 to `seconds` (a udp-probe's output)."""
    times = [0.0, *answers, seconds]
    return max(b - a for a, b in itertools.pairwise(times))


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1] == "udp-echo":
        udp_echo(int(sys.argv[2]), *sys.argv[3:4])
    elif sys.argv[1] == "udp-probe":
        udp_probe(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), *sys.argv[5:6])
    else:
        client(sys.argv[2], int(sys.argv[3]))
