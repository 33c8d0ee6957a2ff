"""The kernel's connection tracking map (bpf/lib/conntrack.h) as the agent reads and writes it.

The agent's conntrack keys are (proto, src, sport, dst, dport, device): a forward flow as recorded, or the
reversed tuple a reply is looked up by. The kernel keys the same tuple by zone, a 64-bit number of the
device (a hash of its id: two devices sharing a number would share their connections, at odds of about
n² / 2^65 for n stateful devices). Only TCP and UDP connections are tracked in the kernel."""

from __future__ import annotations

import collections
import hashlib
import time
from collections.abc import Iterable
from typing import Any

from kumo.datapath import libbpf
from kumo.datapath.layout import CtEntry, CtKey

TRACKED = (6, 17)


def _digest(device_id: str, size: int) -> int:
    return int.from_bytes(hashlib.blake2b(device_id.encode(), digest_size=size).digest(), "little")


def zone_of(device_id: str) -> int:
    return _digest(device_id, 8)


def tag_of(device_id: str) -> int:
    """A zone's 16-bit tag (1..65535), as tunnelled packets carry it in VXLAN's GBP field."""
    return 1 + _digest(device_id, 4) % 65535


def zone_tags(devices: Iterable[str]) -> dict[str, int]:
    """The tags of the zones of `devices`, so that the egress host of a tunnelled forward packet records its
    connection too: the same on every host. Devices whose tag another of `devices` shares get none (their
    connections are pushed by the agent, as without a tag)."""
    tags = {device: tag_of(device) for device in devices}
    count = collections.Counter(tags.values())
    return {device: tag for device, tag in tags.items() if count[tag] == 1}


def _net(ip: int) -> int:
    return int.from_bytes(ip.to_bytes(4, "big"), "little")  # as the flow key holds an address


def ct_key(key: tuple[Any, ...]) -> CtKey | None:
    proto, src, sport, dst, dport, device = key
    if proto not in TRACKED:
        return None
    return CtKey(zone=zone_of(device), src=_net(src), dst=_net(dst), sport=sport, dport=dport, proto=proto)


class KernelConntrack:
    def __init__(self, fd: int, timeout_s: float) -> None:
        self.fd = fd
        self.timeout_ns = int(timeout_s * 1e9)

    def has(self, key: tuple[Any, ...]) -> bool:
        """Whether the kernel holds `key`, recorded within the timeout (as the program answers)."""
        ck = ct_key(key)
        if ck is None:
            return False
        entry = CtEntry()
        if not libbpf.lookup(self.fd, ck, entry):
            return False
        return time.monotonic_ns() - entry.last_ns <= self.timeout_ns

    def record(self, key: tuple[Any, ...]) -> None:
        ck = ct_key(key)
        if ck is not None:
            libbpf.update(self.fd, ck, CtEntry(last_ns=time.monotonic_ns()))
