"""Megaflows: which results go to the kernel as masked flows, under which mask, and in which order the program
tries the masks (bpf/lib/megaflows.h).

A result found for one packet holds for every packet that agrees with it on the fields its simulation read
(its wildcard match). Installed under the byte mask of those fields (kumo.agent.keyindex.byte_mask), the
next connection on the same path finds it in the kernel: no upcall. A result becomes a megaflow only when it
is about the path, not the connection:
  - no flow state to record (conntrack, NAT bindings, load-balancer choices write state) and nothing one-off
    (the simulation made no packet, read no quoted header, parked nothing: such results are not installed);
  - every field it read is in the kernel's key, in bytes of its own: IPv4 TCP and UDP (keyindex explains);
  - it did not read the whole 5-tuple: such a mask matches one connection only, an exact flow does that for
    less (no mask to probe).
The kernel applies the TTL and path-MTU checks to a megaflow's packets as to an exact flow's (the value
carries them), and EtherType, VLAN and the fragment field are always in the mask, so ARP, tagged frames and
fragments never match a megaflow made for something else.

Masks are few (paths differ in the fields they read, not in their values): at most MAX_MASKS at once, and at
most `max_per_port` on one input port, so that one VM cannot make every packet of the host probe many masks.
Beyond either limit the result is installed as an exact flow, and a counter says so. A mask whose megaflows
are all gone leaves the probe order at the next maintain(); its id is given to another mask only after any
megaflow the kernel may still hold under it is deleted (a stale megaflow read under another mask would be a
bypass)."""

from __future__ import annotations

import collections
from typing import Any

from kumo.agent.flows import in_port_of
from kumo.agent.keyindex import byte_mask
from kumo.datapath.datapath import Datapath
from kumo.datapath.flowmaps import FlowMaps, is_megaflow, mask_id_of, masked_fields, megaflow_key
from kumo.datapath.layout import CT_ESTABLISHED, CT_NEW, MAX_MASKS, FlowKey
from kumo.packet.flowmatch import BIT, FIELDS
from kumo.simulation.result import SimulationResult, Verdict

_FIVE_TUPLE = BIT["ip_src"] | BIT["ip_dst"] | BIT["ip_proto"] | BIT["tp_src"] | BIT["tp_dst"]
_IPV4, _TCP, _UDP = 0x0800, 6, 17
_ETH_TYPE_AT, _PROTO_AT, _CT_AT = FlowKey.eth_type.offset, FlowKey.ip_proto.offset, FlowKey.ct.offset
_CT_MASK = 0xFF << (8 * _CT_AT)  # the key's conntrack answer, in a second-stage megaflow's mask
_KINDS = (Verdict.OUTPUT, Verdict.FLOOD, Verdict.DROP)


def megaflow_mask(raw: bytes, result: SimulationResult) -> int | None:
    """The byte mask `result` (found for the packet of exact key `raw`) may be installed under, or None if it
    must stay an exact flow (see the module's docstring)."""
    if result.state_writes or result.match is None:
        return None
    return _path_mask(raw, result, result.match.mask)


def conntrack_mask(raw: bytes, result: SimulationResult) -> int | None:
    """The byte mask of a result whose connection tracking the kernel can take over, or None. As
    megaflow_mask, but over the fields read apart from the conntrack query, and the only state allowed is the
    record of this very flow at its ingress device (the kernel records it)."""
    ct = result.conntrack
    if ct is None:
        return None
    if any(write.kind != "conntrack" for write in result.state_writes) or (result.state_writes and not ct.record):
        return None
    return _path_mask(raw, result, ct.seen)


def _path_mask(raw: bytes, result: SimulationResult, seen: int) -> int | None:
    """The byte mask of the fields `seen`, if a result that read them is about a path: nothing one-off, not the
    whole 5-tuple read, IPv4 TCP or UDP (the fields have bytes of their own in the key)."""
    if result.one_off or result.generated or result.verdict not in _KINDS or seen & _FIVE_TUPLE == _FIVE_TUPLE:
        return None
    eth_type = int.from_bytes(raw[_ETH_TYPE_AT : _ETH_TYPE_AT + 2], "little")
    if eth_type != _IPV4 or raw[_PROTO_AT] not in (_TCP, _UDP):
        return None
    return byte_mask(seen)


class MaskTable:
    def __init__(self, datapath: Datapath, counters: collections.Counter[str], max_per_port: int) -> None:
        self.datapath = datapath
        self.counters = counters
        self.max_per_port = max_per_port
        self._ids: dict[int, int] = {}  # byte mask -> id
        self._masks: dict[int, int] = {}  # id -> byte mask
        self._seen: dict[int, int] = {}  # id -> the FlowMatch fields it was made for (for `kumo flows`)
        self._flows: collections.Counter[int] = collections.Counter()  # id -> booked megaflows
        self._ports: dict[int, collections.Counter[int]] = {}  # input ifindex -> id -> booked megaflows
        self._order: list[int] = []  # as the program has it
        self._dirty: set[int] = set()  # ids the kernel may hold megaflows of: purged before another mask has one
        self._hits: list[int] = [0] * MAX_MASKS  # each id's hits at the last maintain()
        self._recent: list[int] = [0] * MAX_MASKS  # each id's hits between the last two

    @property
    def maps(self) -> FlowMaps:
        return self.datapath.maps  # (there once the datapath has started)

    def key_for(self, raw: bytes, result: SimulationResult) -> bytes | None:
        """The megaflow key to install `result` under (the packet's exact key is `raw`), or None: exact."""
        if not self.max_per_port:
            return None
        mask = megaflow_mask(raw, result)
        if mask is None:
            return None
        assert result.match is not None
        mask_id = self._id_for(mask, raw, result.match.mask)
        if mask_id is None:
            return None
        self.counters["megaflows_queued"] += 1
        return megaflow_key(raw, mask, mask_id)

    def conntrack_keys(self, raw: bytes, result: SimulationResult) -> tuple[bytes, bytes] | None:
        """The two megaflow keys of a result whose connection tracking the kernel takes over
        (bpf/lib/conntrack.h), or None: the first stage's (key.ct untracked: query the device's zone), and the
        second's (key.ct: the answer this result was simulated with). One mask for both, which holds the ct
        byte: so a first-stage megaflow never matches a packet's second lookup."""
        if not self.max_per_port:
            return None
        mask = conntrack_mask(raw, result)
        if mask is None or result.conntrack is None:
            return None
        mask_id = self._id_for(mask | _CT_MASK, raw, result.conntrack.seen)
        if mask_id is None:
            return None
        answered = bytearray(raw)
        answered[_CT_AT] = CT_ESTABLISHED if result.conntrack.found else CT_NEW
        self.counters["megaflows_queued"] += 2
        first = megaflow_key(raw, mask | _CT_MASK, mask_id)
        return first, megaflow_key(bytes(answered), mask | _CT_MASK, mask_id)

    def _id_for(self, mask: int, raw: bytes, seen: int) -> int | None:
        """The id of `mask` for a megaflow of the port of `raw` (allocated if new, put back in the probe order if
        idle), or None past a limit."""
        mask_id = self._ids.get(mask)
        port = self._ports.get(in_port_of(raw)) or collections.Counter()
        if (mask_id is None or mask_id not in port) and len(port) >= self.max_per_port:
            self.counters["megaflow_port_mask_limit"] += 1
            return None
        if mask_id is None:
            mask_id = self._allocate(mask, seen)
            if mask_id is None:
                self.counters["megaflow_masks_full"] += 1
                return None
        if mask_id not in self._order:  # (idle since the last maintain(): tried again)
            self._order.append(mask_id)
            self.maps.set_mask_order(self._order)
        return mask_id

    def _allocate(self, mask: int, seen: int) -> int | None:
        """An id for a new mask: one never used, else one whose mask is idle (no megaflow, not in the probe
        order), its left-overs deleted first."""
        unused = [i for i in range(MAX_MASKS) if i not in self._masks]
        idle = [i for i in self._masks if i not in self._order]
        mask_id = next((i for i in unused if i not in self._dirty), None)
        if mask_id is None:
            mask_id = unused[0] if unused else idle[0] if idle else None
        if mask_id is None:
            return None
        if mask_id in self._masks:
            del self._ids[self._masks.pop(mask_id)]
        if mask_id in self._dirty:
            self._purge(mask_id)
        self.maps.set_mask(mask_id, mask)
        self._ids[mask] = mask_id
        self._masks[mask_id] = mask
        self._seen[mask_id] = seen
        self._dirty.add(mask_id)  # (from now on the kernel may hold megaflows of it)
        self.counters["megaflow_masks_added"] += 1
        return mask_id

    def _purge(self, mask_id: int) -> None:
        """Delete every megaflow the kernel holds under `mask_id`, before the id names another mask (none is
        booked: these are left-overs, e.g. of an earlier agent)."""
        for raw, _ in list(self.maps.megaflows()):
            if mask_id_of(raw) == mask_id:
                self.maps.remove(raw)
                self.counters["megaflows_purged"] += 1
        self._dirty.discard(mask_id)

    # --- the book's observer (kumo.agent.flows) -----------------------------------------------------------
    def booked(self, raw: bytes, result: SimulationResult, sample: bytes) -> None:
        if is_megaflow(raw):
            mask_id = mask_id_of(raw)
            self._flows[mask_id] += 1
            self._ports.setdefault(in_port_of(raw), collections.Counter())[mask_id] += 1

    def unbooked(self, raw: bytes) -> None:
        if not is_megaflow(raw):
            return
        mask_id, port = mask_id_of(raw), in_port_of(raw)
        self._flows[mask_id] -= 1
        if self._flows[mask_id] <= 0:
            del self._flows[mask_id]
        counts = self._ports.get(port)
        if counts is not None:
            counts[mask_id] -= 1
            if counts[mask_id] <= 0:
                del counts[mask_id]
            if not counts:
                del self._ports[port]

    # --- housekeeping ------------------------------------------------------------------------------------
    def maintain(self, pending: set[int]) -> None:
        """Masks no megaflow uses (booked, or `pending`: queued in this round) leave the probe order (their
        ids stay theirs until another mask needs one); the rest are tried most used first, by their hits
        since the last call."""
        hits = self.maps.mask_hits()
        self._recent = [now - then for now, then in zip(hits, self._hits, strict=True)]
        self._hits = hits
        in_use = [i for i in self._order if i in self._flows or i in pending]
        self.counters["megaflow_masks_idled"] += len(self._order) - len(in_use)
        order = sorted(in_use, key=lambda i: -self._recent[i])  # (a stable sort: ties keep their place)
        if order != self._order:
            self._order = order
            self.maps.set_mask_order(order)

    def adopt(self) -> None:
        """Take over the masks an earlier agent left in the kernel (its megaflows are adopted one by one)."""
        self._dirty = set(range(MAX_MASKS))  # (an earlier agent's megaflows: left-overs until adopted)
        self._order = [i for i in self.maps.mask_order() if 0 <= i < MAX_MASKS]
        for mask_id in self._order:
            mask = self.maps.mask(mask_id)
            self._ids[mask] = mask_id
            self._masks[mask_id] = mask
            self._seen[mask_id] = _fields_of(mask)
        self._hits = self.maps.mask_hits()

    def mask_of(self, mask_id: int) -> int | None:
        return self._masks.get(mask_id)

    def report(self) -> list[dict[str, Any]]:
        """Each mask in probe order: its id, the fields it matches, megaflows, hits (ever, and lately)."""
        return [
            {
                "id": i,
                "fields": [name for b, name in enumerate(FIELDS) if self._seen.get(i, 0) >> b & 1],
                "megaflows": self._flows.get(i, 0),
                "hits": self._hits[i],
                "recent_hits": self._recent[i],
            }
            for i in self._order
        ]


def _fields_of(mask: int) -> int:
    """The FlowMatch fields (as a `seen` mask) whose key bytes `mask` covers whole."""
    covered = masked_fields(mask)
    return sum(bit for name, bit in BIT.items() if name in covered)
