"""TCP (RFC 793): ports, sequence numbers, flags and options; checksum over the IPv4 pseudo-header."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kumo.packet import PacketError
from kumo.packet.checksum import internet_checksum, pseudo_header
from kumo.packet.ipv4 import PROTO_TCP

HEADER = struct.Struct("!HHIIHHHH")  # src, dst, seq, ack, offset/flags, window, checksum, urgent
FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


@dataclass(slots=True)
class Tcp:
    src: int
    dst: int
    seq: int = 0
    ack: int = 0
    flags: int = SYN
    window: int = 65535
    options: bytes = b""
    payload: bytes = b""
    urgent: int = 0
    checksum: int = 0

    @classmethod
    def parse(cls, data: bytes) -> Tcp:
        if len(data) < HEADER.size:
            raise PacketError("tcp_truncated", f"{len(data)} bytes")
        src, dst, seq, ack, off_flags, window, csum, urgent = HEADER.unpack_from(data)
        offset = (off_flags >> 12) * 4
        if offset < HEADER.size or offset > len(data):
            raise PacketError("tcp_bad_offset", str(offset))
        return cls(
            src,
            dst,
            seq,
            ack,
            off_flags & 0x01FF,
            window,
            bytes(data[HEADER.size : offset]),
            bytes(data[offset:]),
            urgent,
            csum,
        )

    def _raw(self, csum: int) -> bytes:
        if len(self.options) % 4:
            raise PacketError("tcp_bad_options", "options must fill whole 32-bit words")
        offset = (HEADER.size + len(self.options)) // 4
        head = HEADER.pack(
            self.src, self.dst, self.seq, self.ack, (offset << 12) | self.flags, self.window, csum, self.urgent
        )
        return head + self.options + self.payload

    def build(self, ip_src: int, ip_dst: int) -> bytes:
        raw = self._raw(0)
        csum = internet_checksum(pseudo_header(ip_src, ip_dst, PROTO_TCP, len(raw)) + raw)
        return raw[:16] + struct.pack("!H", csum) + raw[18:]

    def checksum_ok(self, ip_src: int, ip_dst: int) -> bool:
        raw = self._raw(self.checksum)
        return internet_checksum(pseudo_header(ip_src, ip_dst, PROTO_TCP, len(raw)) + raw) == 0
