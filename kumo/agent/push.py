"""State push between agents: the ingress host sends a new flow's conntrack keys and NAT bindings straight
to the hosts that may see its return traffic (the egress host, and the hosts of ports in a stateful port
group with the ingress or egress port), before the flow's first packet leaves. Return traffic then usually
finds the state locally; the shared store (Redis) stays the durable copy.

One UDP datagram per peer and round, sent to the peer's tunnel address on PUSH_PORT: a JSON body
{"host": sender, "ts": milliseconds, "seq": n, "writes": [[kind, key, value], ...]} followed by its
HMAC-SHA256 under the cluster's push key (kumo.agent.pushkey), 32 bytes. A receiver refuses, and counts:
datagrams from addresses that are not tunnel peers, a wrong MAC (forged, or sent with another key), a time
outside the replay window (REPLAY_WINDOW_S, either way: hosts' clocks must agree within it), and a
(sender, ts, seq) it has already taken (replayed). What a peer can spoof on the underlay, its source
address, is therefore not enough to plant a conntrack entry or a NAT binding.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from kumo.packet import int_to_ip
from kumo.simulation.result import StateWrite

log = logging.getLogger("kumo.agent")

PUSH_PORT = 4792
MAX_WRITES = 200  # per datagram (well under 64 KB)


REPLAY_WINDOW_S = 30.0
MAC_SIZE = 32


class PushRefused(ValueError):
    """A datagram not taken; `reason` names the counter (push_<reason>)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Push:
    host: str
    ts: int  # ms since the epoch, by the sender's clock
    seq: int
    writes: list[StateWrite]


def encode(host_id: str, writes: list[StateWrite], key: bytes, seq: int = 0, ts: int | None = None) -> bytes:
    body = json.dumps(
        {
            "host": host_id,
            "ts": int(time.time() * 1000) if ts is None else ts,
            "seq": seq,
            "writes": [[w.kind, list(w.key), w.value] for w in writes],
        },
        separators=(",", ":"),
    ).encode()
    return body + hmac.new(key, body, hashlib.sha256).digest()


def decode(data: bytes, key: bytes) -> Push:
    """The push a datagram carries, its MAC checked; PushRefused (bad_mac, malformed) if it is not one."""
    body, mac = data[:-MAC_SIZE], data[-MAC_SIZE:]
    if len(data) <= MAC_SIZE or not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
        raise PushRefused("bad_mac", "state push with a wrong MAC (forged, or another cluster key)")
    try:
        message = json.loads(body)
        writes = [
            StateWrite(str(kind), tuple(key), tuple(value) if isinstance(value, list) else value)
            for kind, key, value in message["writes"]
        ]
        return Push(str(message["host"]), int(message["ts"]), int(message["seq"]), writes)
    except (TypeError, KeyError, ValueError) as exc:
        raise PushRefused("malformed", f"malformed state push: {exc}") from None


class ReplayGuard:
    """Each (sender, ts, seq) is taken once, and only within REPLAY_WINDOW_S of this host's clock."""

    def __init__(self, window_s: float = REPLAY_WINDOW_S) -> None:
        self.window_ms = int(window_s * 1000)
        self._seen: dict[tuple[str, int, int], int] = {}
        self._pruned_at = 0

    def check(self, push: Push, now_ms: int | None = None) -> None:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        if abs(now - push.ts) > self.window_ms:
            raise PushRefused("stale", f"state push from {push.host} timed {push.ts - now} ms from now")
        ident = (push.host, push.ts, push.seq)
        if ident in self._seen:
            raise PushRefused("replayed", f"state push from {push.host} seen already")
        self._seen[ident] = push.ts
        if now - self._pruned_at > self.window_ms:
            self._seen = {k: ts for k, ts in self._seen.items() if now - ts <= self.window_ms}
            self._pruned_at = now


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
        self._seq = itertools.count()

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def send(self, host_id: str, remote: int, writes: list[StateWrite], key: bytes) -> None:
        if self.sock is None:
            return
        for start in range(0, len(writes), MAX_WRITES):
            datagram = encode(host_id, writes[start : start + MAX_WRITES], key, next(self._seq))
            self.sock.sendto(datagram, (int_to_ip(remote), self.port))

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
