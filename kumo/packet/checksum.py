"""The Internet checksum (RFC 1071) and the TCP/UDP pseudo-header (RFC 793 §3.1, RFC 768)."""

from __future__ import annotations

import struct


def internet_checksum(data: bytes) -> int:
    """One's-complement sum of 16-bit words, complemented. Summing a block whose checksum field is right
    gives 0 (RFC 1071 §1).

    Computed on the block as one big integer: 2**16 = 1 (mod 0xFFFF), so the integer is congruent to the sum
    of its 16-bit words modulo 0xFFFF, which is what end-around-carry folding computes (a non-zero multiple of
    0xFFFF folds to 0xFFFF, not 0). Several times faster in CPython than summing unpacked words (every first
    packet's offloaded checksum is completed with it)."""
    if len(data) % 2:
        data += b"\x00"
    value = int.from_bytes(data, "big")
    folded = value % 0xFFFF
    if folded == 0 and value:
        folded = 0xFFFF
    return ~folded & 0xFFFF


def pseudo_header(src: int, dst: int, proto: int, length: int) -> bytes:
    return struct.pack("!IIBBH", src, dst, 0, proto, length)
