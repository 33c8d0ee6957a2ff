"""UDP (RFC 768), checksum over the IPv4 pseudo-header; 0 means "no checksum" and is sent as 0xFFFF."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kumo.packet import PacketError
from kumo.packet.checksum import internet_checksum, pseudo_header
from kumo.packet.ipv4 import PROTO_UDP

HEADER = struct.Struct("!HHHH")  # src port, dst port, length, checksum


@dataclass(slots=True)
class Udp:
    src: int
    dst: int
    payload: bytes = b""
    checksum: int = 0

    @classmethod
    def parse(cls, data: bytes) -> Udp:
        if len(data) < HEADER.size:
            raise PacketError("udp_truncated", f"{len(data)} bytes")
        src, dst, length, csum = HEADER.unpack_from(data)
        if length < HEADER.size or length > len(data):
            raise PacketError("udp_bad_length", f"{length} of {len(data)}")
        return cls(src, dst, bytes(data[HEADER.size : length]), csum)

    def build(self, ip_src: int, ip_dst: int) -> bytes:
        length = HEADER.size + len(self.payload)
        raw = HEADER.pack(self.src, self.dst, length, 0) + self.payload
        csum = internet_checksum(pseudo_header(ip_src, ip_dst, PROTO_UDP, length) + raw) or 0xFFFF
        return raw[:6] + struct.pack("!H", csum) + raw[8:]

    def checksum_ok(self, ip_src: int, ip_dst: int) -> bool:
        if self.checksum == 0:
            return True
        raw = HEADER.pack(self.src, self.dst, HEADER.size + len(self.payload), self.checksum) + self.payload
        return internet_checksum(pseudo_header(ip_src, ip_dst, PROTO_UDP, len(raw)) + raw) == 0
