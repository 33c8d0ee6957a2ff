"""A thin ctypes wrapper over Debian's libbpf.so.1: load an object, find maps and programs, map operations,
the ring buffer, and object info by id (to adopt the maps of a program left attached by an earlier agent).

Every failing call raises DatapathError with the errno's text and what was being done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from kumo.topology.errors import KumoError

log = logging.getLogger("kumo.datapath")


class DatapathError(KumoError):
    status = 500
    code = "datapath_error"


def _load() -> ctypes.CDLL:
    try:
        return ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError as exc:
        raise DatapathError(
            "libbpf.so.1 is not installed: install Debian's libbpf1 (make setup does it)", code="no_libbpf"
        ) from exc


_lib: ctypes.CDLL | None = None


def lib() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        _lib = _load()
        _declare(_lib)
    return _lib


def _declare(lib: ctypes.CDLL) -> None:
    vp, c_int, c_char_p, u32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "bpf_object__open_file": (vp, [c_char_p, vp]),
        "bpf_object__load": (c_int, [vp]),
        "bpf_object__close": (None, [vp]),
        "bpf_object__find_map_by_name": (vp, [vp, c_char_p]),
        "bpf_object__find_program_by_name": (vp, [vp, c_char_p]),
        "bpf_map__fd": (c_int, [vp]),
        "bpf_map__reuse_fd": (c_int, [vp, c_int]),
        "bpf_map__type": (c_int, [vp]),
        "bpf_map__key_size": (u32, [vp]),
        "bpf_map__value_size": (u32, [vp]),
        "bpf_map__max_entries": (u32, [vp]),
        "bpf_program__fd": (c_int, [vp]),
        "bpf_map_update_elem": (c_int, [c_int, vp, vp, ctypes.c_uint64]),
        "bpf_map_lookup_elem": (c_int, [c_int, vp, vp]),
        "bpf_map_delete_elem": (c_int, [c_int, vp]),
        "bpf_map_get_next_key": (c_int, [c_int, vp, vp]),
        "bpf_map_update_batch": (c_int, [c_int, vp, vp, ctypes.POINTER(u32), vp]),
        "bpf_map_lookup_batch": (c_int, [c_int, vp, vp, vp, vp, ctypes.POINTER(u32), vp]),
        "bpf_prog_get_fd_by_id": (c_int, [u32]),
        "bpf_map_get_fd_by_id": (c_int, [u32]),
        "bpf_obj_get_info_by_fd": (c_int, [c_int, vp, ctypes.POINTER(u32)]),
        "ring_buffer__new": (vp, [c_int, vp, vp, vp]),
        "ring_buffer__consume": (c_int, [vp]),
        "ring_buffer__epoll_fd": (c_int, [vp]),
        "ring_buffer__free": (None, [vp]),
        "libbpf_set_print": (vp, [vp]),
        "bpf_prog_test_run_opts": (c_int, [c_int, vp]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def _fail(what: str, err: int | None = None) -> DatapathError:
    err = abs(err) if err else ctypes.get_errno()
    return DatapathError(f"{what}: {os.strerror(err)} (errno {err})")


def check(rc: int, what: str) -> int:
    """libbpf returns a negative errno (or -1 with errno set)."""
    if rc < 0:
        raise _fail(what, rc if rc != -1 else None)
    return rc


# The ring buffer's sample callback: int (*)(void *ctx, void *data, size_t size)
SampleFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class RingBuffer:
    """A BPF ring buffer; `callback(bytes)` is called for every record by consume().

    ctypes swallows exceptions raised in callbacks: the wrapper catches them, counts them and keeps the
    first for the caller to see (consume re-raises it)."""

    def __init__(self, map_fd: int, callback: Callable[[bytes], None]) -> None:
        self.errors = 0
        self._error: BaseException | None = None

        def on_sample(_ctx: int, data: int, size: int) -> int:
            try:
                callback(ctypes.string_at(data, size))
            except BaseException as exc:
                self.errors += 1
                if self._error is None:
                    self._error = exc
            return 0

        self._fn = SampleFn(on_sample)  # kept: a collected CFUNCTYPE would crash the process
        ptr = lib().ring_buffer__new(map_fd, self._fn, None, None)
        if not ptr:
            raise _fail("ring_buffer__new")
        self._ptr: int | None = ptr

    def epoll_fd(self) -> int:
        return int(lib().ring_buffer__epoll_fd(self._ptr))

    def consume(self) -> int:
        rc = lib().ring_buffer__consume(self._ptr)
        self._reraise()
        return max(rc, 0)

    def _reraise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        if self._ptr:
            lib().ring_buffer__free(self._ptr)
            self._ptr = None


class BpfObject:
    """An opened and loaded BPF object file; maps may be reused from earlier fds before loading."""

    def __init__(self, path: str, reuse_maps: dict[str, int] | None = None) -> None:
        self._ptr = lib().bpf_object__open_file(path.encode(), None)
        if not self._ptr:
            raise _fail(f"opening BPF object {path}")
        self.reused: set[str] = set()  # the maps of `reuse_maps` taken over (the others start empty)
        for name, fd in (reuse_maps or {}).items():
            if self._same_layout(name, fd):
                check(lib().bpf_map__reuse_fd(self._map(name), fd), f"reusing map {name}")
                self.reused.add(name)
        check(lib().bpf_object__load(self._ptr), f"loading BPF object {path} (see the verifier log above)")

    def _same_layout(self, name: str, fd: int) -> bool:
        """Whether an earlier map has this object's layout for `name`. One from an earlier version of the
        program may not: the program would not load with it (the verifier checks every access against the
        map's sizes), so it is left and this object's own starts empty."""
        ptr, earlier = self._map(name), map_info(fd)
        lb = lib()
        now = (
            lb.bpf_map__type(ptr),
            lb.bpf_map__key_size(ptr),
            lb.bpf_map__value_size(ptr),
            lb.bpf_map__max_entries(ptr),
        )
        then = (earlier.type, earlier.key_size, earlier.value_size, earlier.max_entries)
        if then == now:
            return True
        log.warning(
            "map %s of the earlier program has another layout (type, key size, value size, entries %s; now %s): "
            "not taken over, starting empty",
            name,
            then,
            now,
        )
        return False

    def _map(self, name: str) -> int:
        ptr = lib().bpf_object__find_map_by_name(self._ptr, name.encode())
        if not ptr:
            raise DatapathError(f"BPF object has no map {name}")
        return int(ptr)

    def map_fd(self, name: str) -> int:
        return check(lib().bpf_map__fd(self._map(name)), f"fd of map {name}")

    def program_fd(self, name: str) -> int:
        ptr = lib().bpf_object__find_program_by_name(self._ptr, name.encode())
        if not ptr:
            raise DatapathError(f"BPF object has no program {name}")
        return check(lib().bpf_program__fd(ptr), f"fd of program {name}")

    def close(self) -> None:
        if self._ptr:
            lib().bpf_object__close(self._ptr)
            self._ptr = None


# --- maps -----------------------------------------------------------------------------------------------
def update(fd: int, key: Any, value: Any) -> None:
    """Insert or replace one entry; key and value are ctypes objects or their bytes."""
    check(lib().bpf_map_update_elem(fd, _pointer(key), _pointer(value), 0), "map update")


def _pointer(data: Any) -> Any:
    """A pointer to `data` for a `const void *` argument: bytes pass as they are (the C side only reads)."""
    return data if isinstance(data, bytes) else ctypes.byref(data)


class _BatchOpts(ctypes.Structure):  # struct bpf_map_batch_opts (bpf/bpf.h)
    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


def update_batch(fd: int, keys: bytes, values: bytes, count: int) -> None:
    """`count` updates in one system call (~8x the rate of single updates): the keys' bytes back to back, and
    the values' likewise."""
    done = ctypes.c_uint32(count)
    opts = _BatchOpts(sz=ctypes.sizeof(_BatchOpts))
    rc = lib().bpf_map_update_batch(fd, keys, values, ctypes.byref(done), ctypes.byref(opts))
    check(rc, f"batch map update ({done.value} of {count} done)")


def entries(fd: int, key_size: int, value_size: int, batch: int = 4096) -> Iterator[tuple[bytes, bytes, int]]:
    """Every entry of a hash map, `batch` per system call (bpf_map_lookup_batch): (the keys' bytes, the
    values' bytes, how many). A snapshot as the kernel walks its buckets: entries may come and go meanwhile."""
    keys = ctypes.create_string_buffer(key_size * batch)
    values = ctypes.create_string_buffer(value_size * batch)
    token = ctypes.create_string_buffer(max(key_size, 8))  # where the walk resumes (a bucket, for a hash map)
    opts = _BatchOpts(sz=ctypes.sizeof(_BatchOpts))
    started = False
    while True:
        count = ctypes.c_uint32(batch)
        rc = lib().bpf_map_lookup_batch(
            fd, token if started else None, token, keys, values, ctypes.byref(count), ctypes.byref(opts)
        )
        done = not _found(rc, f"batch map lookup ({batch} entries a call)")  # ENOENT: the walk's end
        if count.value:
            n = count.value
            yield ctypes.string_at(keys, key_size * n), ctypes.string_at(values, value_size * n), n
        if done:
            return
        started = True


def _found(rc: int, what: str) -> bool:
    """True on success, False when the key is not in the map (ENOENT); any other failure raises."""
    if rc >= 0:
        return True
    if rc == -errno.ENOENT or ctypes.get_errno() == errno.ENOENT:
        return False
    raise _fail(what, rc if rc != -1 else None)


def lookup(fd: int, key: Any, value: Any) -> bool:
    return _found(lib().bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value)), "map lookup")


def delete(fd: int, key: Any) -> bool:
    return _found(lib().bpf_map_delete_elem(fd, _pointer(key)), "map delete")


def keys(fd: int, key_type: Any) -> list[Any]:
    """Every key of a hash map (a snapshot: entries may come and go meanwhile)."""
    out = []
    current = None
    while True:
        nxt = key_type()
        rc = lib().bpf_map_get_next_key(fd, ctypes.byref(current) if current is not None else None, ctypes.byref(nxt))
        if rc < 0:
            break
        out.append(nxt)
        current = nxt
    return out


# --- objects by id (adoption) ----------------------------------------------------------------------------
class _ProgInfo(ctypes.Structure):  # the head of struct bpf_prog_info (linux/bpf.h), up to name
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
    ]


class _MapInfo(ctypes.Structure):  # the head of struct bpf_map_info
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    ]


def maps_of_program(prog_id: int) -> dict[str, int]:
    """{map name: fd} of the maps a loaded program uses (the caller closes the fds)."""
    prog_fd = check(lib().bpf_prog_get_fd_by_id(prog_id), f"program id {prog_id}")
    try:
        info = _ProgInfo()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        check(lib().bpf_obj_get_info_by_fd(prog_fd, ctypes.byref(info), ctypes.byref(size)), "program info")
        ids = (ctypes.c_uint32 * info.nr_map_ids)()
        count = info.nr_map_ids
        info = _ProgInfo(nr_map_ids=count, map_ids=ctypes.addressof(ids))
        size = ctypes.c_uint32(ctypes.sizeof(info))
        check(lib().bpf_obj_get_info_by_fd(prog_fd, ctypes.byref(info), ctypes.byref(size)), "program map ids")
    finally:
        os.close(prog_fd)
    found = {}
    for map_id in ids[:count]:
        fd = check(lib().bpf_map_get_fd_by_id(map_id), f"map id {map_id}")
        found[map_info(fd).name.decode()] = fd
    return found


def map_info(fd: int) -> _MapInfo:
    info = _MapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "map info")
    return info


class _TestRunOpts(ctypes.Structure):  # struct bpf_test_run_opts (bpf/bpf.h)
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


def test_run(prog_fd: int, frame: bytes) -> tuple[int, bytes]:
    """Run a TC program on `frame` in the kernel (BPF_PROG_TEST_RUN): its verdict and the packet as the
    program left it (a redirect is reported, not performed)."""
    data_in = ctypes.create_string_buffer(frame, len(frame))
    data_out = ctypes.create_string_buffer(len(frame) + 256)
    opts = _TestRunOpts(
        sz=ctypes.sizeof(_TestRunOpts),
        data_in=ctypes.addressof(data_in),
        data_out=ctypes.addressof(data_out),
        data_size_in=len(frame),
        data_size_out=len(data_out),
        repeat=1,
    )
    check(lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "BPF_PROG_TEST_RUN")
    return opts.retval, data_out.raw[: opts.data_size_out]


def possible_cpus() -> int:
    """The number of possible CPUs: per-CPU map values hold one slot for each."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    total = 0
    for part in text.split(","):
        first, _, last = part.partition("-")
        total += int(last or first) - int(first) + 1
    return total
