"""ICMP (RFC 792): echo, and errors that carry the offending IP header plus 8 bytes of its payload.

RFC 1812 §4.3.2.3 allows quoting more; Kumo quotes the IP header and the first 8 payload bytes (enough for
the ports, which NAT needs to rewrite inside errors).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kumo.packet import PacketError
from kumo.packet.checksum import internet_checksum

HEADER = struct.Struct("!BBHI")  # type, code, checksum, rest of header (id/seq, unused, or next-hop MTU)
ECHO_REPLY, DEST_UNREACH, ECHO_REQUEST, TIME_EXCEEDED = 0, 3, 8, 11
NET_UNREACH, HOST_UNREACH, PROTO_UNREACH, PORT_UNREACH, FRAG_NEEDED, ADMIN_PROHIBITED = 0, 1, 2, 3, 4, 13
TTL_EXCEEDED = 0
ERROR_TYPES = frozenset({DEST_UNREACH, 4, 5, TIME_EXCEEDED, 12})  # unreachable, quench, redirect, time, param


@dataclass(slots=True)
class Icmp:
    type: int
    code: int
    rest: int = 0
    payload: bytes = b""
    checksum_ok: bool = True

    @property
    def echo_id(self) -> int:
        return self.rest >> 16

    @property
    def echo_seq(self) -> int:
        return self.rest & 0xFFFF

    @property
    def is_error(self) -> bool:
        return self.type in ERROR_TYPES

    @classmethod
    def parse(cls, data: bytes) -> Icmp:
        if len(data) < HEADER.size:
            raise PacketError("icmp_truncated", f"{len(data)} bytes")
        icmp_type, code, _csum, rest = HEADER.unpack_from(data)
        return cls(icmp_type, code, rest, bytes(data[HEADER.size :]), internet_checksum(bytes(data)) == 0)

    def build(self) -> bytes:
        raw = HEADER.pack(self.type, self.code, 0, self.rest) + self.payload
        return raw[:2] + struct.pack("!H", internet_checksum(raw)) + raw[4:]

    @classmethod
    def echo(cls, request: bool, ident: int, seq: int, data: bytes = b"") -> Icmp:
        return cls(ECHO_REQUEST if request else ECHO_REPLY, 0, (ident << 16) | seq, data)

    @classmethod
    def error(cls, icmp_type: int, code: int, offending_ip: bytes, mtu: int = 0) -> Icmp:
        ihl = (offending_ip[0] & 0x0F) * 4 if offending_ip else 0
        return cls(icmp_type, code, mtu & 0xFFFF, offending_ip[: ihl + 8])
