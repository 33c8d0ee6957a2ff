"""ARP for IPv4 over Ethernet (RFC 826)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kumo.packet import PacketError, bytes_to_mac, mac_to_bytes

LAYOUT = struct.Struct("!HHBBH6sI6sI")  # htype, ptype, hlen, plen, op, sha, spa, tha, tpa
REQUEST, REPLY = 1, 2


@dataclass(slots=True)
class Arp:
    op: int
    sha: str
    spa: int
    tha: str
    tpa: int

    @classmethod
    def parse(cls, data: bytes) -> Arp:
        if len(data) < LAYOUT.size:
            raise PacketError("arp_truncated", f"{len(data)} bytes")
        htype, ptype, hlen, plen, op, sha, spa, tha, tpa = LAYOUT.unpack_from(data)
        if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4):
            raise PacketError("arp_not_ipv4_ethernet")
        return cls(op, bytes_to_mac(sha), spa, bytes_to_mac(tha), tpa)

    def build(self) -> bytes:
        return LAYOUT.pack(1, 0x0800, 6, 4, self.op, mac_to_bytes(self.sha), self.spa, mac_to_bytes(self.tha), self.tpa)

    @property
    def gratuitous(self) -> bool:
        """RFC 5227 §3: the sender announces its own address (spa == tpa)."""
        return self.spa == self.tpa
