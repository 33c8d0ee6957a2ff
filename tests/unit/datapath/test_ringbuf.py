"""The upcall ring's shared-memory reader follows the kernel's ring buffer layout: committed records in order
(and the most found waiting at once), discarded ones skipped, a reserved (busy) one ends the read until it is
committed, and the consumer position is written back so that the producer may reuse the space. A memfd laid
out like a ring buffer map stands in for the kernel's pages here (the real map is read in
tests/integration/test_actions_in_the_kernel.py)."""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator

import pytest

from kumo.datapath.libbpf import DatapathError
from kumo.datapath.ringbuf import BUSY, DISCARD, HEADER, SharedMemoryRing

PAGE = mmap.PAGESIZE
SIZE = 4 * PAGE


class FakeRing:
    """Pages: consumer position, producer position, the data twice (the kernel maps the same pages twice)."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("kumo-test-ring")
        os.ftruncate(self.fd, 2 * PAGE + 2 * SIZE)
        self.mem = mmap.mmap(self.fd, 2 * PAGE + 2 * SIZE)
        self.produced = 0

    def put(self, sample: bytes, flags: int = 0) -> int:
        """Append a record at the producer position (in both copies of the data); returns its position."""
        at = self.produced
        record = struct.pack("=II", len(sample) | flags, 0) + sample
        record += bytes(-len(record) % 8)
        for copy in (0, SIZE):
            for i, byte in enumerate(record):  # byte by byte: a record may wrap around the end
                self.mem[2 * PAGE + copy + (at + i) % SIZE] = byte
        self.produced += len(record)
        struct.pack_into("=Q", self.mem, PAGE, self.produced)
        return at

    def commit(self, at: int) -> None:
        length = struct.unpack_from("=I", self.mem, 2 * PAGE + at % SIZE)[0] & ~BUSY
        for copy in (0, SIZE):
            struct.pack_into("=I", self.mem, 2 * PAGE + copy + at % SIZE, length)

    @property
    def consumed(self) -> int:
        return int(struct.unpack_from("=Q", self.mem, 0)[0])


@pytest.fixture
def fake() -> Iterator[FakeRing]:
    ring = FakeRing()
    yield ring
    ring.mem.close()
    os.close(ring.fd)


def test_committed_records_are_read_in_order_and_their_space_given_back(fake: FakeRing) -> None:
    ring = SharedMemoryRing(fake.fd, SIZE)
    assert ring.read() == []
    fake.put(b"first")
    fake.put(b"second record")
    assert ring.read() == [b"first", b"second record"]
    assert fake.consumed == fake.produced == (HEADER + 8) + (HEADER + 16)
    assert ring.read() == []
    fake.put(b"third")
    assert ring.read() == [b"third"]
    assert ring.most_waiting == (HEADER + 8) + (HEADER + 16)  # the most found at once: the first two
    ring.close()


def test_discarded_records_are_skipped(fake: FakeRing) -> None:
    ring = SharedMemoryRing(fake.fd, SIZE)
    fake.put(b"kept")
    fake.put(b"thrown away", DISCARD)
    fake.put(b"kept too")
    assert ring.read() == [b"kept", b"kept too"]
    assert fake.consumed == fake.produced
    ring.close()


def test_a_reserved_record_ends_the_read_until_it_is_committed(fake: FakeRing) -> None:
    ring = SharedMemoryRing(fake.fd, SIZE)
    fake.put(b"before")
    busy = fake.put(b"being written", BUSY)
    fake.put(b"after")
    assert ring.read() == [b"before"]
    assert fake.consumed == busy  # the producer's commit sees the consumer waiting at its record: a wake-up
    fake.commit(busy)
    assert ring.read() == [b"being written", b"after"]
    assert fake.consumed == fake.produced
    ring.close()


def test_a_record_that_wraps_around_the_end_reads_as_one_piece(fake: FakeRing) -> None:
    ring = SharedMemoryRing(fake.fd, SIZE)
    filler = bytes(SIZE // 2 - HEADER)
    fake.put(filler)
    assert ring.read() == [filler]
    fake.put(filler[: SIZE // 2 - 2 * HEADER])  # the data ends 8 bytes before the end
    sample = bytes(range(200))
    fake.put(sample)
    assert ring.read()[-1] == sample
    assert fake.consumed == fake.produced > SIZE
    ring.close()


def test_a_reader_starts_where_the_last_one_stopped(fake: FakeRing) -> None:
    first = SharedMemoryRing(fake.fd, SIZE)
    fake.put(b"old")
    assert first.read() == [b"old"]
    first.close()
    fake.put(b"new")
    again = SharedMemoryRing(fake.fd, SIZE)
    assert again.read() == [b"new"]
    again.close()


def test_a_size_that_is_not_a_power_of_two_is_refused(fake: FakeRing) -> None:
    with pytest.raises(DatapathError, match="power of 2"):
        SharedMemoryRing(fake.fd, 3 * PAGE)
