"""State push between agents: the ingress host sends a new flow's conntrack keys and NAT bindings straight
to the hosts that may see its return traffic (the egress host, and the hosts of ports in a stateful port
group with the ingress or egress port), before the flow's first packet leaves. Return traffic then usually
finds the state locally; the shared store (Redis) stays the durable copy.

One UDP datagram per peer and round, JSON: {"host": sender, "writes": [[kind, key, value], ...]}, sent to
the peer's tunnel address on PUSH_PORT. Datagrams from addresses that are not tunnel peers are ignored.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator

from kumo.packet import int_to_ip
from kumo.simulation.result import StateWrite

log = logging.getLogger("kumo.agent")

PUSH_PORT = 4792
MAX_WRITES = 200  # per datagram (well under 64 KB)


def encode(host_id: str, writes: list[StateWrite]) -> bytes:
    return json.dumps(
        {"host": host_id, "writes": [[w.kind, list(w.key), w.value] for w in writes]}, separators=(",", ":")
    ).encode()


def decode(data: bytes) -> tuple[str, list[StateWrite]]:
    """The sender and its writes (keys and NAT values back as tuples); ValueError if malformed."""
    try:
        message = json.loads(data)
        writes = [
            StateWrite(str(kind), tuple(key), tuple(value) if isinstance(value, list) else value)
            for kind, key, value in message["writes"]
        ]
        return str(message["host"]), writes
    except (TypeError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed state push: {exc}") from None


class StatePush:
    def __init__(self, port: int = PUSH_PORT) -> None:
        self.sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        try:
            self.sock.bind(("0.0.0.0", port))
        except OSError as exc:
            log.warning("state push: cannot listen on UDP %d (%s): peers' state arrives through Redis only", port, exc)
            self.sock.close()
            self.sock = None
            return
        self.sock.setblocking(False)
        self.port = port

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def send(self, host_id: str, remote: int, writes: list[StateWrite]) -> None:
        if self.sock is None:
            return
        for start in range(0, len(writes), MAX_WRITES):
            self.sock.sendto(encode(host_id, writes[start : start + MAX_WRITES]), (int_to_ip(remote), self.port))

    def receive(self) -> Iterator[tuple[str, bytes]]:
        """(sender address, datagram) for everything waiting."""
        if self.sock is None:
            return
        while True:
            try:
                data, (address, _) = self.sock.recvfrom(65536)
            except BlockingIOError:
                return
            yield address, data

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
