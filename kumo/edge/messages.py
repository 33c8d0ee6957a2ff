"""ExaBGP 5's JSON API messages (one per line) as typed events. Only what the agent acts on is kept; a line
that is not such a message is an `Unreadable`, counted and logged by the caller, never an exception."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

FAMILY = "ipv4 unicast"


@dataclass(frozen=True)
class State:
    """The session's TCP connection came up ("connected"), the session established ("up") or ended
    ("down", with ExaBGP's reason)."""

    peer: str
    state: str
    reason: str = ""


@dataclass(frozen=True)
class Open:
    peer: str
    direction: str
    asn: int
    hold_time: int


@dataclass(frozen=True)
class Notification:
    peer: str
    direction: str
    code: int
    subcode: int
    data: str = ""


@dataclass(frozen=True)
class Update:
    """IPv4 unicast prefixes announced (prefix -> next hop) and withdrawn; `as_path` is the announced path
    (ASes of sequences and sets alike, for loop detection)."""

    peer: str
    announced: dict[str, str] = field(default_factory=dict)
    withdrawn: tuple[str, ...] = ()
    as_path: tuple[int, ...] = ()
    end_of_rib: bool = False


@dataclass(frozen=True)
class Unreadable:
    line: str
    why: str


Event = State | Open | Notification | Update | Unreadable


def parse(line: str) -> Event:
    try:
        msg = json.loads(line)
        kind = msg["type"]
        neighbor = msg["neighbor"]
        peer = neighbor["address"]["peer"]
        if kind == "state":
            return State(peer, neighbor["state"], neighbor.get("reason", ""))
        if kind == "open":
            opened = neighbor["open"]
            return Open(peer, neighbor.get("direction", ""), int(opened["asn"]), int(opened["hold_time"]))
        if kind == "notification":
            note = neighbor["notification"]
            return Notification(
                peer, neighbor.get("direction", ""), int(note["code"]), int(note["subcode"]), note.get("data", "")
            )
        if kind == "update":
            return _update(peer, neighbor["message"])
        return Unreadable(line, f"message type {kind!r} is not one the agent asked for")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return Unreadable(line, f"{type(exc).__name__}: {exc}")


def _update(peer: str, message: dict[str, Any]) -> Update:
    if "eor" in message:
        return Update(peer, end_of_rib=True)
    update = message["update"]
    announced: dict[str, str] = {}
    for next_hop, routes in update.get("announce", {}).get(FAMILY, {}).items():
        ipaddress.IPv4Address(next_hop)
        for route in routes:
            announced[_prefix(route)] = next_hop
    withdrawn = tuple(_prefix(route) for route in update.get("withdraw", {}).get(FAMILY, []))
    path: list[int] = []
    for segment in update.get("attribute", {}).get("as-path", {}).values():
        path += [int(asn) for asn in segment.get("value", [])]
    return Update(peer, announced, withdrawn, tuple(path))


def _prefix(route: dict[str, Any]) -> str:
    return str(ipaddress.IPv4Network(route["nlri"]))
