"""The kernel's flow tables as the agent sees them: the exact flows (`kumo_flows`) and the megaflows
(`kumo_megaflows`, bpf/lib/megaflows.h) with their masks, their probe order and their hit counters.

A flow is named by its key's bytes everywhere in the agent: FLOW_KEY_SIZE bytes for an exact flow, or
MEGAFLOW_KEY_SIZE for a megaflow (the masked key, then the mask's id). Both begin with the input port, so code
that only needs the port reads either the same way; the length says which table holds the flow."""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterator

from kumo.datapath import libbpf
from kumo.datapath.layout import MAX_MASKS, FlowKey, FlowValue, MaskList, MegaflowKey

FLOW_KEY_SIZE = ctypes.sizeof(FlowKey)
MEGAFLOW_KEY_SIZE = ctypes.sizeof(MegaflowKey)
_MASK_ID = struct.Struct("=I")

# last_used_ns read straight out of a batch of values, as 64-bit words (the layout keeps it 8-byte aligned)
_VALUE_WORDS, _LAST_USED_WORD = ctypes.sizeof(FlowValue) // 8, FlowValue.last_used_ns.offset // 8


def is_megaflow(raw: bytes) -> bool:
    return len(raw) == MEGAFLOW_KEY_SIZE


def megaflow_key(raw: bytes, mask: int, mask_id: int) -> bytes:
    """The megaflow key of the packet whose exact key is `raw`, under `mask` (an integer over the key's
    little-endian bytes) of id `mask_id`."""
    masked = (int.from_bytes(raw[:FLOW_KEY_SIZE], "little") & mask).to_bytes(FLOW_KEY_SIZE, "little")
    return masked + _MASK_ID.pack(mask_id)


def mask_id_of(raw: bytes) -> int:
    """The mask id of megaflow key `raw`."""
    return int(_MASK_ID.unpack_from(raw, FLOW_KEY_SIZE)[0])


def masked_fields(mask: int) -> set[str]:
    """The names of the FlowKey fields whose bytes `mask` covers whole."""
    raw = mask.to_bytes(FLOW_KEY_SIZE, "little")
    out = set()
    for name, *_ in FlowKey._fields_:
        descriptor = getattr(FlowKey, name)
        if all(raw[descriptor.offset : descriptor.offset + descriptor.size]):
            out.add(name)
    return out


def last_used(fd: int, key_size: int) -> dict[bytes, int]:
    """Every flow's last use (bpf_ktime_get_ns; 0: unused since installed) in the flow map `fd`, by its key's
    bytes. What idle expiry needs, read a few thousand flows per system call with no Python object per flow
    but the entry: one lookup per flow took ~1 s of CPU (and of the GIL) per pass at 100,000 flows."""
    out: dict[bytes, int] = {}
    for keys, values, count in libbpf.entries(fd, key_size, ctypes.sizeof(FlowValue)):
        used = memoryview(values).cast("Q")[_LAST_USED_WORD::_VALUE_WORDS].tolist()
        out.update(zip([keys[i : i + key_size] for i in range(0, count * key_size, key_size)], used, strict=True))
    return out


class FlowMaps:
    """The exact and megaflow maps of one loaded program, by their fds."""

    def __init__(self, fds: dict[str, int]) -> None:
        self.exact_fd = fds["kumo_flows"]
        self.mega_fd = fds["kumo_megaflows"]
        self.masks_fd = fds["kumo_masks"]
        self.list_fd = fds["kumo_mask_list"]
        self.hits_fd = fds["kumo_mask_hits"]

    def _fd(self, raw: bytes) -> int:
        return self.mega_fd if len(raw) == MEGAFLOW_KEY_SIZE else self.exact_fd

    # --- flows -------------------------------------------------------------------------------------------
    def install(self, key: FlowKey | bytes, value: FlowValue | bytes) -> None:
        libbpf.update(self._fd(bytes(key)) if isinstance(key, bytes) else self.exact_fd, key, value)

    def install_many(self, flows: list[tuple[bytes, bytes]]) -> None:
        """Install flows given as (key, value) bytes, one system call per table. (Joining bytes costs ~0.6 us a
        flow; building ctypes arrays of FlowKey and FlowValue from them cost ~2.3 us.)"""
        exact = [flow for flow in flows if len(flow[0]) == FLOW_KEY_SIZE]
        mega = [flow for flow in flows if len(flow[0]) == MEGAFLOW_KEY_SIZE] if len(exact) < len(flows) else []
        for fd, group in ((self.exact_fd, exact), (self.mega_fd, mega)):
            if len(group) == 1:
                libbpf.update(fd, *group[0])
            elif group:
                keys, values = zip(*group, strict=True)
                libbpf.update_batch(fd, b"".join(keys), b"".join(values), len(group))

    def remove(self, key: FlowKey | bytes) -> bool:
        return libbpf.delete(self._fd(key) if isinstance(key, bytes) else self.exact_fd, key)

    def lookup(self, raw: bytes) -> FlowValue | None:
        value = FlowValue()
        key = (MegaflowKey if is_megaflow(raw) else FlowKey).from_buffer_copy(raw)
        return value if libbpf.lookup(self._fd(raw), key, value) else None

    def exact(self) -> Iterator[tuple[FlowKey, FlowValue]]:
        key_size, value_size = FLOW_KEY_SIZE, ctypes.sizeof(FlowValue)
        for keys, values, count in libbpf.entries(self.exact_fd, key_size, value_size):
            for i in range(count):
                yield FlowKey.from_buffer_copy(keys, i * key_size), FlowValue.from_buffer_copy(values, i * value_size)

    def megaflows(self) -> Iterator[tuple[bytes, FlowValue]]:
        """Every megaflow: its key's bytes and its value."""
        key_size, value_size = MEGAFLOW_KEY_SIZE, ctypes.sizeof(FlowValue)
        for keys, values, count in libbpf.entries(self.mega_fd, key_size, value_size):
            for i in range(count):
                yield keys[i * key_size : (i + 1) * key_size], FlowValue.from_buffer_copy(values, i * value_size)

    def last_used(self) -> dict[bytes, int]:
        """Every flow's last use, both tables."""
        out = last_used(self.exact_fd, FLOW_KEY_SIZE)
        out.update(last_used(self.mega_fd, MEGAFLOW_KEY_SIZE))
        return out

    def last_used_of(self, raw: bytes) -> int | None:
        """One flow's last use (as in last_used), None if it is not in the kernel."""
        value = self.lookup(raw)
        return None if value is None else int(value.last_used_ns)

    # --- masks -------------------------------------------------------------------------------------------
    def set_mask(self, mask_id: int, mask: int) -> None:
        libbpf.update(self.masks_fd, ctypes.c_uint32(mask_id), mask.to_bytes(FLOW_KEY_SIZE, "little"))

    def set_mask_order(self, ids: list[int]) -> None:
        """The masks the program tries, in this order (at most MAX_MASKS)."""
        order = MaskList(n=len(ids))
        order.ids[: len(ids)] = ids
        libbpf.update(self.list_fd, ctypes.c_uint32(0), order)

    def mask_order(self) -> list[int]:
        order = MaskList()
        libbpf.lookup(self.list_fd, ctypes.c_uint32(0), order)
        return list(order.ids[: min(order.n, MAX_MASKS)])

    def mask(self, mask_id: int) -> int:
        value = FlowKey()
        libbpf.lookup(self.masks_fd, ctypes.c_uint32(mask_id), value)
        return int.from_bytes(bytes(value), "little")

    def mask_hits(self) -> list[int]:
        """Packets that hit each mask id's megaflows, ever (summed over CPUs)."""
        cpus = libbpf.possible_cpus()
        out = []
        for mask_id in range(MAX_MASKS):
            values = (ctypes.c_uint64 * cpus)()
            libbpf.lookup(self.hits_fd, ctypes.c_uint32(mask_id), values)
            out.append(sum(values))
        return out
