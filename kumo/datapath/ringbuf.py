"""The upcall ring read straight from its shared memory, as libbpf's ring_buffer reads it, but with no C
callback into Python per record: a first packet waits for this read, and a ctypes callback (GIL taken
again, arguments boxed, the record copied through ctypes) cost more than the rest of the read.

The layout is the kernel's (kernel/bpf/ringbuf.c, and libbpf's ringbuf.c reads it the same way): page 0
holds the consumer position, the only page user space may write; page 1 the producer position; the data
follows, mapped twice in a row so that a record that wraps around the end reads as one piece. Each record
is an 8-byte header (length with a BUSY and a DISCARD bit, page offset) and the sample, rounded up to 8.

The positions and headers are read and written with single aligned 8- and 4-byte loads and stores (a
position written byte by byte is read torn by the producer), in program order. That is what libbpf's
smp_load_acquire/smp_store_release come to on x86-64, whose stores and loads are not reordered with other
loads; weaker machines need barriers that Python cannot emit, so `open_ring` takes libbpf's own reader
there.
"""

from __future__ import annotations

import mmap
import platform
from typing import Protocol

from kumo.datapath import libbpf

BUSY = 1 << 31  # the producer has reserved the record and not yet committed it
DISCARD = 1 << 30  # committed as discarded: skipped
HEADER = 8


class UpcallRing(Protocol):
    def fileno(self) -> int: ...  # readable (EPOLLIN) while committed records wait

    def read(self) -> list[bytes]: ...  # every committed record, oldest first

    most_waiting: int  # bytes: the most found waiting by a read (its space is what the BPF program had left)

    def close(self) -> None: ...


class SharedMemoryRing:
    """A BPF ring buffer map read through mmap (x86-64: see the module's note on ordering)."""

    def __init__(self, map_fd: int, size: int) -> None:
        if size <= 0 or size & (size - 1):
            raise libbpf.DatapathError(f"a BPF ring buffer's size is a power of 2, not {size}")
        page = mmap.PAGESIZE
        self._fd = map_fd
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._shared = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        # Positions and headers through memoryviews of the machine's own 8- and 4-byte integers: one load or
        # store each. (struct's "=Q" goes byte by byte: the producer saw torn consumer positions and
        # refused reservations as if the ring were full.)
        self._consumer_pos = memoryview(self._consumer).cast("Q")
        self._producer_pos = memoryview(self._shared).cast("Q")  # (word 0; the data is read as bytes)
        self._words32 = memoryview(self._shared).cast("I")
        self._data_at = page
        self._mask = size - 1
        self._pos: int = self._consumer_pos[0]
        self.most_waiting = 0

    def fileno(self) -> int:
        return self._fd

    def read(self) -> list[bytes]:
        records: list[bytes] = []
        shared, words32, producer = self._shared, self._words32, self._producer_pos
        pos, data_at, mask = self._pos, self._data_at, self._mask
        busy = False
        self.most_waiting = max(self.most_waiting, producer[0] - pos)
        while not busy and (end := producer[0]) > pos:
            while pos < end:
                at = data_at + (pos & mask)
                length = words32[at >> 2]
                if length & BUSY:  # reserved, not yet committed: its commit wakes us (it sits at our position), or
                    # (a held port's, kumo_ring_lazy) the agent's next poll reads it
                    busy = True
                    break
                size = length & ~(BUSY | DISCARD)
                if not length & DISCARD:
                    records.append(shared[at + HEADER : at + HEADER + size])
                pos += (size + HEADER + 7) & ~7
            self._consumer_pos[0] = pos  # the space is the producer's again
        self._pos = pos
        return records

    def close(self) -> None:
        for view in (self._consumer_pos, self._producer_pos, self._words32):
            view.release()  # (an mmap with views of it cannot be closed)
        self._consumer.close()
        self._shared.close()


class CallbackRing:
    """libbpf's own reader (a C callback per record), where shared-memory reads from Python are not safe."""

    def __init__(self, map_fd: int) -> None:
        self._records: list[bytes] = []
        self._ring = libbpf.RingBuffer(map_fd, self._records.append)
        self.most_waiting = 0  # (not visible through libbpf's reader)

    def fileno(self) -> int:
        return self._ring.epoll_fd()

    def read(self) -> list[bytes]:
        self._ring.consume()
        records = self._records[:]
        self._records.clear()
        return records

    def close(self) -> None:
        self._ring.close()


def open_ring(map_fd: int, size: int) -> UpcallRing:
    if platform.machine() in ("x86_64", "AMD64"):
        return SharedMemoryRing(map_fd, size)
    return CallbackRing(map_fd)
