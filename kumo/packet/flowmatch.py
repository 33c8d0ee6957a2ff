"""FlowMatch: the header fields of one packet, recording which of them the simulation read.

Every read through an attribute marks the field as seen; the wildcard match of a simulation result holds
only the seen fields (and the input port), with their ORIGINAL values: rewrites made during the walk (NAT,
TTL) change what later stages read, but the flow is keyed on what entered. Writes never mark a field.
"""

from __future__ import annotations

from typing import Any

FIELDS: tuple[str, ...] = (
    "in_port",
    "eth_src",
    "eth_dst",
    "eth_type",
    "vlan",
    "ip_src",
    "ip_dst",
    "ip_proto",
    "ip_tos",
    "ip_ttl",
    "fragment",  # "none" | "first" | "later" (see kumo.packet.ipv4.IPv4.fragment)
    "tp_src",
    "tp_dst",
    "icmp_type",
    "icmp_code",
    "icmp_id",
    "arp_op",
    "arp_sha",
    "arp_spa",
    "arp_tha",
    "arp_tpa",
)
INDEX = {name: i for i, name in enumerate(FIELDS)}
BIT = {name: 1 << i for i, name in enumerate(FIELDS)}
_IN_PORT_BIT = BIT["in_port"]
_MASK_INDEXES: dict[int, tuple[int, ...]] = {}  # mask -> the field indexes it selects (few distinct masks)


def mask_indexes(mask: int) -> tuple[int, ...]:
    indexes = _MASK_INDEXES.get(mask)
    if indexes is None:
        indexes = tuple(i for i in range(len(FIELDS)) if mask >> i & 1)
        _MASK_INDEXES[mask] = indexes
    return indexes


class FlowMatch:
    """Field values by name; `seen` is a bitmask of the fields read (bit i = FIELDS[i])."""

    __slots__ = ("_orig", "_v", "dirty", "seen")

    def __init__(self, **values: Any) -> None:
        v: list[Any] = [None] * len(FIELDS)
        for name, value in values.items():
            v[INDEX[name]] = value
        self._v = v
        self._orig = tuple(v)
        self.seen = BIT["in_port"]  # a flow is always keyed on where it entered
        self.dirty = 0  # fields written since entry (bit i = FIELDS[i]): where changed() looks

    @classmethod
    def of(cls, values: list[Any]) -> FlowMatch:
        """From every field's value in FIELDS order (the parser's way: no keyword lookups)."""
        match = cls.__new__(cls)
        match._v = values
        match._orig = tuple(values)
        match.seen = _IN_PORT_BIT
        match.dirty = 0
        return match

    def get(self, name: str) -> Any:
        """Read a field (marks it seen)."""
        i = INDEX[name]
        self.seen |= 1 << i
        return self._v[i]

    def peek(self, name: str) -> Any:
        """Read without marking: for traces, logs and building output, never for decisions."""
        return self._v[INDEX[name]]

    def set(self, name: str, value: Any) -> None:
        i = INDEX[name]
        self._v[i] = value
        self.dirty |= 1 << i

    def original(self, name: str) -> Any:
        return self._orig[INDEX[name]]

    def original_values(self) -> tuple[Any, ...]:
        """Every field as it entered, indexed by INDEX (for code that reads them all: the kernel key)."""
        return self._orig

    def changed(self, ignore: int = 0) -> dict[str, Any]:
        """Fields whose value differs from what entered (but those in the `ignore` mask): the header
        rewrites to apply."""
        v, o = self._v, self._orig
        return {FIELDS[i]: v[i] for i in mask_indexes(self.dirty & ~ignore) if v[i] != o[i]}

    def seen_fields(self) -> list[str]:
        return [name for i, name in enumerate(FIELDS) if self.seen >> i & 1]

    def wildcard(self) -> WildcardMatch:
        mask = self.seen
        orig = self._orig
        return WildcardMatch(mask, tuple([orig[i] for i in mask_indexes(mask)]))

    def key_for(self, mask: int) -> tuple[Any, ...]:
        """This packet's original values under a mask (no marking): the tuple-space lookup key."""
        orig = self._orig
        return tuple([orig[i] for i in mask_indexes(mask)])

    def copy(self) -> FlowMatch:
        other = FlowMatch.__new__(FlowMatch)
        other._v = list(self._v)
        other._orig = self._orig
        other.seen = self.seen
        other.dirty = self.dirty
        return other

    def as_dict(self) -> dict[str, Any]:
        return {name: v for name, v in zip(FIELDS, self._v, strict=True) if v is not None}

    def __repr__(self) -> str:
        return f"FlowMatch({self.as_dict()})"


class WildcardMatch:
    """A mask of fields and their values: matches every packet that agrees on those fields."""

    __slots__ = ("mask", "values")

    def __init__(self, mask: int, values: tuple[Any, ...]) -> None:
        self.mask = mask
        self.values = values

    def fields(self) -> dict[str, Any]:
        names = [name for i, name in enumerate(FIELDS) if self.mask >> i & 1]
        return dict(zip(names, self.values, strict=True))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WildcardMatch) and (self.mask, self.values) == (other.mask, other.values)

    def __hash__(self) -> int:
        return hash((self.mask, self.values))

    def __repr__(self) -> str:
        return f"WildcardMatch({self.fields()})"
