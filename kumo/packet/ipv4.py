"""IPv4 (RFC 791): options kept as bytes, fragments (MF flag, offset), header checksum."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kumo.packet import PacketError
from kumo.packet.checksum import internet_checksum

HEADER = struct.Struct("!BBHHHBBHII")  # ver/ihl, tos, total length, id, flags/frag offset, ttl, proto, csum, src, dst
PROTO_ICMP, PROTO_TCP, PROTO_UDP = 1, 6, 17
FLAG_DF, FLAG_MF = 0x4000, 0x2000
OFFSET_MASK = 0x1FFF


@dataclass(slots=True)
class IPv4:
    src: int
    dst: int
    proto: int
    payload: bytes = b""
    ttl: int = 64
    tos: int = 0
    ident: int = 0
    flags_offset: int = 0  # DF/MF flags and the fragment offset in 8-byte units
    options: bytes = b""
    checksum_ok: bool = True

    @property
    def more_fragments(self) -> bool:
        return bool(self.flags_offset & FLAG_MF)

    @property
    def frag_offset(self) -> int:
        return self.flags_offset & OFFSET_MASK

    @property
    def dont_fragment(self) -> bool:
        return bool(self.flags_offset & FLAG_DF)

    @property
    def fragment(self) -> str:
        """ "none", "first" (offset 0, MF set) or "later" (offset > 0): what rules' fragment_policy sees."""
        if self.frag_offset:
            return "later"
        return "first" if self.more_fragments else "none"

    @classmethod
    def parse(cls, data: bytes) -> IPv4:
        if len(data) < HEADER.size:
            raise PacketError("ip_truncated", f"{len(data)} bytes")
        ver_ihl, tos, total, ident, flags_offset, ttl, proto, _csum, src, dst = HEADER.unpack_from(data)
        if ver_ihl >> 4 != 4:
            raise PacketError("ip_bad_version", str(ver_ihl >> 4))
        ihl = (ver_ihl & 0x0F) * 4
        if ihl < HEADER.size:
            raise PacketError("ip_bad_ihl", str(ihl))
        if total < ihl or total > len(data):
            raise PacketError("ip_bad_length", f"total {total}, header {ihl}, have {len(data)}")
        ok = internet_checksum(bytes(data[:ihl])) == 0
        return cls(
            src, dst, proto, bytes(data[ihl:total]), ttl, tos, ident, flags_offset, bytes(data[HEADER.size : ihl]), ok
        )

    def header(self, payload_length: int) -> bytes:
        if len(self.options) % 4:
            raise PacketError("ip_bad_options", "options must fill whole 32-bit words")
        ihl = (HEADER.size + len(self.options)) // 4
        fields = [
            (4 << 4) | ihl,
            self.tos,
            ihl * 4 + payload_length,
            self.ident,
            self.flags_offset,
            self.ttl,
            self.proto,
            0,
            self.src,
            self.dst,
        ]
        raw = HEADER.pack(*fields) + self.options
        return raw[:10] + struct.pack("!H", internet_checksum(raw)) + raw[12:]

    def build(self) -> bytes:
        return self.header(len(self.payload)) + self.payload
