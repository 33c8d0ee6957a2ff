"""The wildcard-flow table: results indexed by their wildcard match, found again by tuple-space search.

One hash table per distinct mask (the set of fields a simulation read); a lookup probes each mask with the
packet's values under it. Every entry is a complete answer for every packet that agrees on its fields, so
the first hit is right. Entries go when anything they depended on changes: `invalidate(tag)`.
Results that generated packets or wait for an event are not kept (they are about one packet, not a flow).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from kumo.packet.flowmatch import FlowMatch
from kumo.simulation.result import SimulationResult, Verdict

CACHEABLE = frozenset({Verdict.OUTPUT, Verdict.FLOOD, Verdict.DROP})


class WildcardTable:
    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._tables: dict[int, dict[tuple[Any, ...], SimulationResult]] = {}
        self._order: OrderedDict[tuple[int, tuple[Any, ...]], None] = OrderedDict()  # oldest first
        self._by_tag: dict[Any, set[tuple[int, tuple[Any, ...]]]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._order)

    @property
    def masks(self) -> int:
        return len(self._tables)

    def insert(self, result: SimulationResult) -> bool:
        if result.verdict not in CACHEABLE or result.generated or result.one_off or result.match is None:
            return False
        mask, key = result.match.mask, result.match.values
        self._tables.setdefault(mask, {})[key] = result
        self._order[(mask, key)] = None
        self._order.move_to_end((mask, key))
        for tag in result.tags:
            self._by_tag.setdefault(tag, set()).add((mask, key))
        while len(self._order) > self.max_entries:
            self._remove(*self._order.popitem(last=False)[0])
        return True

    def lookup(self, match: FlowMatch) -> SimulationResult | None:
        for mask, table in self._tables.items():
            hit = table.get(match.key_for(mask))
            if hit is not None:
                self.hits += 1
                return hit
        self.misses += 1
        return None

    def holds(self, result: SimulationResult) -> bool:
        """Whether `result` is still the entry for its match (neither invalidated nor replaced since)."""
        if result.match is None:
            return False
        table = self._tables.get(result.match.mask)
        return table is not None and table.get(result.match.values) is result

    def invalidate(self, tag: Any) -> int:
        """Remove every entry that depended on `tag`; returns how many went."""
        entries = self._by_tag.pop(tag, set())
        for mask, key in entries:
            self._remove(mask, key)
        return len(entries)

    def _remove(self, mask: int, key: tuple[Any, ...]) -> None:
        table = self._tables.get(mask)
        if table is None:
            return
        result = table.pop(key, None)
        self._order.pop((mask, key), None)
        if not table:
            del self._tables[mask]
        if result is not None:
            for tag in result.tags:
                refs = self._by_tag.get(tag)
                if refs is not None:
                    refs.discard((mask, key))
                    if not refs:
                        del self._by_tag[tag]
