"""Checksum offload of the first packet: a VM's kernel hands TCP/UDP to its virtual NIC with only the
pseudo-header sum in the checksum field (CHECKSUM_PARTIAL), leaving the rest to "the hardware". In the fast
path the kernel keeps that state along with the packet and finishes it; a packet that went through the
upcall ring is plain bytes, so the agent finishes the checksum before re-injecting it, exactly as the NIC
would have. Only a field that holds precisely the pseudo-header sum is completed: a packet whose checksum is
simply wrong stays wrong (its receiver drops it, as on a real network)."""

from __future__ import annotations

import struct

from kumo.packet.checksum import internet_checksum, pseudo_header

_TCP, _UDP = 6, 17


def _fold(data: bytes) -> int:
    return ~internet_checksum(data) & 0xFFFF


def complete_checksum(frame: bytes) -> bytes:
    """`frame` with a partial TCP/UDP checksum completed; any other frame unchanged."""
    l3 = 14
    ethertype = struct.unpack_from("!H", frame, 12)[0] if len(frame) >= 14 else 0
    if ethertype == 0x8100 and len(frame) >= 18:
        ethertype = struct.unpack_from("!H", frame, 16)[0]
        l3 = 18
    if ethertype != 0x0800 or len(frame) < l3 + 20:
        return frame
    ihl = (frame[l3] & 0x0F) * 4
    total = struct.unpack_from("!H", frame, l3 + 2)[0]
    frag = struct.unpack_from("!H", frame, l3 + 6)[0]
    proto = frame[l3 + 9]
    end = l3 + total
    if frag & 0x3FFF or proto not in (_TCP, _UDP) or ihl < 20 or end > len(frame):
        return frame
    l4 = l3 + ihl
    field = l4 + (16 if proto == _TCP else 6)
    if field + 2 > end:
        return frame
    src, dst = struct.unpack_from("!II", frame, l3 + 12)
    pseudo = pseudo_header(src, dst, proto, end - l4)
    segment = frame[l4:end]
    stored = struct.unpack_from("!H", frame, field)[0]
    if (proto == _UDP and stored == 0) or stored != _fold(pseudo):
        return frame  # no checksum (UDP), or not a partial one: complete, or wrong and left so
    if internet_checksum(pseudo + segment) == 0:
        return frame  # (a complete checksum that happens to equal the pseudo-header sum)
    zeroed = segment[: field - l4] + b"\x00\x00" + segment[field - l4 + 2 :]
    value = internet_checksum(pseudo + zeroed)
    if proto == _UDP and value == 0:
        value = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    return frame[:field] + struct.pack("!H", value) + frame[field + 2 :]
