"""VXLAN header (RFC 7348 §5): flags with the I bit, 24-bit VNI; carried in UDP to port 4789."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kumo.packet import PacketError

HEADER = struct.Struct("!II")  # flags (I = 0x08) + 24 reserved bits, VNI + 8 reserved bits
UDP_PORT = 4789  # RFC 7348 §5: IANA-assigned
FLAG_I = 0x08000000


@dataclass(slots=True)
class Vxlan:
    vni: int
    payload: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> Vxlan:
        if len(data) < HEADER.size:
            raise PacketError("vxlan_truncated")
        flags, vni_word = HEADER.unpack_from(data)
        if not flags & FLAG_I:
            raise PacketError("vxlan_no_vni", "the I flag is not set")
        return cls(vni_word >> 8, bytes(data[HEADER.size :]))

    def build(self) -> bytes:
        if not 0 <= self.vni < 1 << 24:
            raise PacketError("vxlan_bad_vni", str(self.vni))
        return HEADER.pack(FLAG_I, self.vni << 8) + self.payload
