"""Wire formats, one module per header, each with its layout declared once (a struct format).

Addresses inside Kumo's packet code: MACs are lowercase "aa:bb:cc:dd:ee:ff" strings (as in the API), IPv4
addresses are ints (fast prefix matching); `ip_to_int` / `int_to_ip` convert.
"""

from __future__ import annotations

import socket
import struct


class PacketError(ValueError):
    """A frame that cannot be parsed; `reason` is the short name counted by the datapath."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def mac_to_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def bytes_to_mac(raw: bytes) -> str:
    return raw.hex(":")


def ip_to_int(ip: str) -> int:
    return int(struct.unpack("!I", socket.inet_aton(ip))[0])


def int_to_ip(value: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", value))


BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


def is_multicast_mac(mac: str) -> bool:
    """The I/G bit: the low bit of the first octet (IEEE 802-2014 §8.2), read from its second hex digit."""
    return mac[1] in "13579bdfBDF"
