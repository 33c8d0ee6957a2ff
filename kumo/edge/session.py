"""One peer's session as the operator sees it (`GET /v1/routers/{id}/bgp_peers`): the FSM state, since
when, prefixes received and advertised, the last error, flaps; and what it has learned.

ExaBGP reports three transitions: "connected" (TCP up, OPEN sent), "up" (established) and "down" (with a
reason). They map onto RFC 4271's states as: connected -> opensent, an OPEN received -> openconfirm, up ->
established, down -> active (ExaBGP retries the connection). Before its first connection a session is
"connect". A session stopped by the agent shows why instead (e.g. "max_prefix")."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from kumo.edge.messages import Notification, Open, State, Update

DEFAULT_MAX_PREFIXES = 10_000
STALLED_AFTER_S = 5.0  # not established for this long, with nothing heard: say what to check
STATES = {"connected": "opensent", "up": "established", "down": "active"}


@dataclass
class PeerSession:
    peer_id: str
    router_id: str
    host_id: str
    local_asn: int
    max_prefixes: int = DEFAULT_MAX_PREFIXES
    state: str = "connect"
    since: float = field(default_factory=time.time)
    established_at: float | None = None
    learned: dict[str, str] = field(default_factory=dict)  # prefix -> announced next hop
    advertised: set[str] = field(default_factory=set)
    last_error: str | None = None
    flaps: int = 0
    updates: int = 0
    looped: int = 0  # prefixes dropped because their AS path holds our own AS
    stalled: bool = False  # stuck in connect/active (check_stalled)
    down_at: float | None = None  # when the established session last went down (wall clock)

    def on_state(self, event: State) -> bool:
        """Apply a state change; True if an established session went down (its learned routes must go)."""
        was_up = self.state == "established"
        self._enter(STATES.get(event.state, event.state))
        if event.state == "up":
            self.established_at = time.time()
        elif event.state == "down":
            self.established_at = None
            self.advertised.clear()
            if event.reason:
                self.last_error = _readable(event.reason)
            if was_up:
                self.flaps += 1
                self.down_at = time.time()
            return was_up
        return False

    def on_open(self, event: Open) -> None:
        if event.direction == "receive":
            self._enter("openconfirm")

    def on_notification(self, event: Notification) -> None:
        side = "received" if event.direction == "receive" else "sent"
        self.last_error = f"notification {side} ({event.code},{event.subcode}): {describe(event.code, event.subcode)}"

    def on_update(self, event: Update) -> tuple[dict[str, str], set[str]]:
        """Fold an update in: (prefix -> next hop now learned, prefixes no longer learned). Routes whose AS
        path holds our own AS are dropped (ExaBGP does no loop detection)."""
        self.updates += 1
        gone = {p for p in event.withdrawn if self.learned.pop(p, None) is not None}
        if self.local_asn in event.as_path:
            self.looped += len(event.announced)
            gone |= {p for p in event.announced if self.learned.pop(p, None) is not None}
            return {}, gone
        new = {p: hop for p, hop in event.announced.items() if self.learned.get(p) != hop}
        self.learned.update(new)
        return new, gone - set(new)

    def check_stalled(self, now: float, address: str, local_address: str) -> None:
        """A session that stays in connect/active says so: ExaBGP reports nothing while the peer ignores it,
        and a peer ignores a TCP MD5 signature that does not match (or is missing) without a word."""
        if self.state in ("connect", "active") and now - self.since > STALLED_AFTER_S and not self.stalled:
            self.stalled = True
            self.last_error = (
                f"no BGP session after {now - self.since:.0f} s: the peer does not complete a TCP connection on "
                f"port 179. Check that {address} is up, that it has {local_address} as a neighbor in AS "
                f"{self.local_asn}, and that the password is the same on both sides (a peer drops a connection "
                "whose TCP MD5 signature does not match, or is missing, without a word)"
            )

    def over_limit(self) -> bool:
        return len(self.learned) > self.max_prefixes

    def stop(self, why: str, error: str) -> None:
        self.last_error = error
        self.learned.clear()
        self.advertised.clear()
        self.established_at = None
        self._enter(why)

    def _enter(self, state: str) -> None:
        if state != self.state:
            self.state, self.since, self.stalled = state, time.time(), False

    def status(self) -> dict[str, Any]:
        """The row of the bgp_peer_state table (uptime is computed by readers from established_at)."""
        return {
            "state": self.state,
            "since": round(self.since, 3),
            "established_at": self.established_at,
            "host_id": self.host_id,
            "prefixes_received": len(self.learned),
            "prefixes_advertised": len(self.advertised),
            "last_error": self.last_error,
            "flaps": self.flaps,
            "updates": self.updates,
            "down_at": self.down_at,
        }


# RFC 4271 §4.5 and RFC 4486 (Cease subcodes): enough to name what an operator meets.
_CODES = {1: "message header error", 2: "OPEN message error", 3: "UPDATE message error", 4: "hold timer expired",
          5: "finite state machine error", 6: "cease"}  # fmt: skip
_OPEN = {1: "unsupported version", 2: "bad peer AS", 3: "bad BGP identifier", 4: "unsupported optional parameter",
         6: "unacceptable hold time", 7: "unsupported capability"}  # fmt: skip
_CEASE = {1: "maximum number of prefixes reached", 2: "administrative shutdown", 3: "peer de-configured",
          4: "administrative reset", 5: "connection rejected", 6: "other configuration change",
          7: "connection collision resolution", 8: "out of resources"}  # fmt: skip


def _readable(reason: str) -> str:
    """ExaBGP's reason for a session ending, with a NOTIFICATION's codes named ("notification sent (2,2)")."""
    found = re.fullmatch(r"notification (sent|received) \((\d+),(\d+)\)", reason.strip())
    if found is None:
        return reason
    return f"{reason.strip()}: {describe(int(found[2]), int(found[3]))}"


def describe(code: int, subcode: int) -> str:
    what = _CODES.get(code, f"error code {code}")
    detail = {2: _OPEN, 6: _CEASE}.get(code, {}).get(subcode)
    return f"{what}: {detail}" if detail else what
