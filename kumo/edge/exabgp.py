"""A peer's ExaBGP: its configuration file, its environment, and the API commands the agent sends it.

One ExaBGP process per peer (not per uplink): a peer stopped for exceeding its prefix limit, or restarted
because an operator changed it, never resets the other sessions of the same uplink.
"""

from __future__ import annotations

import base64
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from kumo.topology.errors import KumoError


class SpeakerUnavailable(KumoError):
    """ExaBGP is not installed where the agent runs."""


@dataclass(frozen=True)
class PeerConfig:
    """What one session is made of: any change restarts its speaker."""

    peer_id: str
    router_id: str
    address: str
    peer_asn: int
    local_asn: int
    local_address: str
    hold_time: int
    keepalive: int
    password: str | None
    max_prefixes: int


def exabgp_command() -> str:
    """The exabgp executable: beside this Python's (the venv), else on the PATH."""
    beside = Path(sys.executable).with_name("exabgp")
    found = str(beside) if beside.exists() else shutil.which("exabgp")
    if found is None:
        raise SpeakerUnavailable("exabgp is not installed: `make setup` installs it (pip install 'exabgp>=5.0,<5.1')")
    return found


def render_config(peer: PeerConfig, bridge_socket: Path) -> str:
    """ExaBGP's configuration for one peer. The password goes base64-encoded (md5-base64), so that no
    character of it can break the file's quoting. ExaBGP sends keepalives every hold_time / 3 and has no
    setting of its own for them (the negotiated hold time is the lower of both sides')."""
    lines = [
        "process kumo {",
        f"    run {sys.executable} -m kumo.edge.bridge {bridge_socket};",
        "    encoder json;",
        "}",
        f"neighbor {peer.address} {{",
        f'    description "kumo peer {peer.peer_id}";',
        f"    router-id {peer.local_address};",
        f"    local-address {peer.local_address};",
        f"    local-as {peer.local_asn};",
        f"    peer-as {peer.peer_asn};",
        f"    hold-time {peer.hold_time};",
        "    adj-rib-out true;",
        "    family { ipv4 unicast; }",
    ]
    if peer.password:
        encoded = base64.b64encode(peer.password.encode()).decode()
        lines += [f'    md5-password "{encoded}";', "    md5-base64 true;"]
    lines += [
        "    api {",
        "        processes [ kumo ];",
        "        receive { parsed; update; notification; open; }",
        "        neighbor-changes;",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def environment() -> dict[str, str]:
    """ExaBGP's settings (its environment variables): stay root (it runs in a namespace the agent made and
    needs TCP MD5), no acknowledgement lines and no named pipes on the API, logs to stdout (a file)."""
    return {
        "exabgp_daemon_drop": "false",
        "exabgp_daemon_daemonize": "false",
        "exabgp_api_ack": "false",
        "exabgp_api_cli": "false",
        "exabgp_log_destination": "stdout",
        "exabgp_log_level": "INFO",
    }


def announce(peer_address: str, cidr: str, next_hop: str) -> str:
    return f"neighbor {peer_address} announce route {cidr} next-hop {next_hop}"


def withdraw(peer_address: str, cidr: str, next_hop: str) -> str:
    return f"neighbor {peer_address} withdraw route {cidr} next-hop {next_hop}"


def teardown(peer_address: str, subcode: int) -> str:
    """Close the session with a Cease NOTIFICATION of `subcode` (RFC 4486: 1 = maximum number of prefixes)."""
    return f"neighbor {peer_address} teardown {subcode}"
