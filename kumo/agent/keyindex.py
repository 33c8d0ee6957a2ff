"""Wildcard results found again from the kernel's flow key, without parsing the frame in Python.

An upcall carries the key the BPF program looked up: the input port and every header field it parsed. A
wildcard result depends only on the fields its simulation read, and each of those fields is one range of
bytes in that key, stored one way for one value (kumo.datapath.actions.flow_key builds the same bytes from a
FlowMatch). So every packet whose key agrees, on those bytes, with the key of a packet the result was found
for gets the same result. Finding it takes one AND of the key as an integer and one dict lookup per distinct
byte mask, where parsing the frame into a FlowMatch and probing the wildcard table took about a quarter of a
first packet's time in the agent (it runs cold: the agent sleeps between first packets).

Only IPv4 TCP and UDP results are indexed, and their byte masks always hold the input port, EtherType, VLAN,
protocol and fragment fields: within that class each field has bytes of its own. (ICMP and ARP reuse the
port bytes for other fields; ARP's hardware addresses and the TTL are not in the key at all.) Everything
else, and every miss, takes the full path, which indexes what it finds.

The index does not follow invalidations itself: its owner checks that a hit is still the wildcard table's
entry (WildcardTable.holds), and clears the index when what a result's kernel actions were made from
(interfaces, tunnels, the topology snapshot) changes.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

from kumo.datapath.layout import FlowKey
from kumo.packet.flowmatch import BIT
from kumo.simulation.result import SimulationResult

KEY_SIZE = ctypes.sizeof(FlowKey)
_IPV4 = 0x0800
_INDEXED_PROTOCOLS = (6, 17)  # TCP, UDP

# The FlowMatch fields the kernel key holds, each in the key field of the same name. (Not icmp_id: it is
# ICMP's, and only TCP and UDP results are indexed.)
_IN_THE_KEY = {name for name, *_ in FlowKey._fields_ if name in BIT} - {"icmp_id"}
_ALWAYS = ("in_port", "eth_type", "vlan", "ip_proto", "fragment")  # what tells the fields' meaning apart
_ALWAYS_BITS = sum(BIT[name] for name in _ALWAYS)
_OUTSIDE_THE_KEY = sum(bit for name, bit in BIT.items() if name not in _IN_THE_KEY)


@functools.lru_cache(maxsize=4096)  # (a pure function of a few distinct masks, asked on every first packet)
def byte_mask(seen: int) -> int | None:
    """The key-bytes mask (as an integer over the little-endian key) of the fields in `seen` and the fields
    that give them their meaning; None if `seen` holds a field the key does not carry (or carries in bytes
    shared with other fields)."""
    if seen & _OUTSIDE_THE_KEY:
        return None
    mask = bytearray(KEY_SIZE)
    for name, bit in BIT.items():
        if (seen | _ALWAYS_BITS) & bit:
            descriptor = FlowKey.__dict__[name]
            mask[descriptor.offset : descriptor.offset + descriptor.size] = b"\xff" * descriptor.size
    return int.from_bytes(mask, "little")


@dataclass(slots=True)
class Indexed:
    """What the agent needs to serve a hit: the result (for the book), its kernel actions, whether the
    packet is re-injected (it has outputs), and the drop counter a drop result counts."""

    result: SimulationResult
    value: bytes  # the kernel value's bytes
    reinject: bool
    drop_counter: str | None
    mask: int = 0
    masked_key: int = 0


class KernelKeyIndex:
    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._tables: dict[int, dict[int, Indexed]] = {}  # byte mask -> masked key -> entry
        self._masks: dict[int, int | None] = {}  # FlowMatch mask -> byte mask (few distinct ones)
        self._entries = 0

    def __len__(self) -> int:
        return self._entries

    def lookup(self, key: bytes) -> Indexed | None:
        value = int.from_bytes(key, "little")
        for mask, table in self._tables.items():
            entry = table.get(value & mask)
            if entry is not None:
                return entry
        return None

    def add(self, key: bytes, entry: Indexed) -> bool:
        """Index `entry` (whose result was found for the packet of kernel key `key`); False if its kind of
        result is not indexed."""
        flow = FlowKey.from_buffer_copy(key)
        if flow.eth_type != _IPV4 or flow.ip_proto not in _INDEXED_PROTOCOLS or entry.result.match is None:
            return False
        seen = entry.result.match.mask
        if seen not in self._masks:
            self._masks[seen] = byte_mask(seen)
        mask = self._masks[seen]
        if mask is None:
            return False
        if self._entries >= self.max_entries:
            self.clear()  # (the full path indexes again what is still in use)
        entry.mask, entry.masked_key = mask, int.from_bytes(key, "little") & mask
        table = self._tables.setdefault(mask, {})
        self._entries += entry.masked_key not in table
        table[entry.masked_key] = entry
        return True

    def discard(self, entry: Indexed) -> None:
        table = self._tables.get(entry.mask)
        if table is not None and table.get(entry.masked_key) is entry:
            del table[entry.masked_key]
            self._entries -= 1
            if not table:
                del self._tables[entry.mask]

    def clear(self) -> None:
        self._tables.clear()
        self._entries = 0
