"""Ethernet II with an optional 802.1Q tag (IEEE 802.1Q §9.6: TPID 0x8100, then PCP/DEI/VID)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kumo.packet import PacketError, bytes_to_mac, mac_to_bytes

HEADER = struct.Struct("!6s6sH")  # dst, src, ethertype (or TPID)
TAG = struct.Struct("!HH")  # TCI (PCP 3 bits, DEI 1, VID 12), inner ethertype

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
MIN_FRAME = 60  # without FCS; shorter frames are padded (IEEE 802.3 §3.2.8)


@dataclass(slots=True)
class Ethernet:
    dst: str
    src: str
    ethertype: int
    payload: bytes = b""
    vlan: int | None = None
    pcp: int = 0

    @classmethod
    def parse(cls, data: bytes) -> Ethernet:
        if len(data) < HEADER.size:
            raise PacketError("eth_truncated", f"{len(data)} bytes")
        dst, src, ethertype = HEADER.unpack_from(data)
        offset, vlan, pcp = HEADER.size, None, 0
        if ethertype == ETH_P_8021Q:
            if len(data) < offset + TAG.size:
                raise PacketError("vlan_truncated")
            tci, ethertype = TAG.unpack_from(data, offset)
            vlan, pcp = tci & 0x0FFF, tci >> 13
            offset += TAG.size
        return cls(bytes_to_mac(dst), bytes_to_mac(src), ethertype, bytes(data[offset:]), vlan, pcp)

    def build(self, pad: bool = False) -> bytes:
        if self.vlan is None:
            head = HEADER.pack(mac_to_bytes(self.dst), mac_to_bytes(self.src), self.ethertype)
        else:
            head = HEADER.pack(mac_to_bytes(self.dst), mac_to_bytes(self.src), ETH_P_8021Q) + TAG.pack(
                (self.pcp << 13) | self.vlan, self.ethertype
            )
        frame = head + self.payload
        if pad and len(frame) < MIN_FRAME:
            frame += bytes(MIN_FRAME - len(frame))
        return frame
