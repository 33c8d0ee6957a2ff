"""The ZooKeeper store's change log: following it (every watcher, on every host) and trimming it.

`log/c-<seq>` znodes are sequential. ZooKeeper 3.8 numbers them densely (a deletion or a failed multi-op uses
no number), so a follower knows the name of the next entry and waits for it with an `exists` watch on that
exact name: a small request or two per change and per follower, whatever the length of the log. (A watch on
the list of children, which this replaced, sent the whole list, thousands of names, to every follower on
every change: 1,000 hosts cannot follow a log that way.)

Should an entry never come (a server numbering otherwise, or a follower so far behind that its entry was
trimmed), a follower that heard nothing for SAFETY_POLL seconds while the log changed lists it once, jumps
to the next entry and, if entries it had not read were trimmed, asks its watchers to resync.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from kumo.topology.store.base import Change

log = logging.getLogger("kumo.store.zookeeper")

LOG_KEEP = 4096  # change-log entries kept for watchers that lag behind
TRIM_EVERY = 512  # trim the log once every this many commits
READ_AHEAD = 64  # entries a follower that is behind asks for at once
SAFETY_POLL = 5.0  # seconds a follower waits for a watch before it looks again (a watch lost with a session)


def entry_name(seq: int) -> str:
    return f"c-{seq:010d}"


class LogFollower:
    """Reads log entries in sequence order and hands their changes to `publish`."""

    def __init__(
        self,
        zk: KazooClient,
        io: Any,
        root: str,
        publish: Callable[[Iterable[Change]], None],
        closing: Callable[[], bool],
    ) -> None:
        self.zk = zk
        self.io = io
        self.root = root
        self.publish = publish
        self.closing = closing
        self.kick = threading.Event()
        self._seen_changes = -1  # the log's child version at the last safety poll
        self._batch = 2  # (a follower that starts does not know yet whether it is behind: no watch at first)

    def _p(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _wake(self, _event: Any = None) -> None:
        self.kick.set()

    def tail(self) -> int:
        """The number the next entry will have."""
        seqs = [int(n[2:]) for n in self.io.get_children(self._p("log"))]
        return max(seqs) + 1 if seqs else 0

    def run(self, next_seq: int) -> None:
        outage = False
        while not self.closing():
            try:
                next_seq = self._step(next_seq)
                if outage:
                    log.info("change-log reader: ZooKeeper is back; resuming at change %d", next_seq)
                    outage = False
            except Exception as exc:
                if self.closing():
                    return
                if not outage:
                    log.warning("change-log reader: %s; retrying until ZooKeeper answers", exc)
                    outage = True
                time.sleep(0.2)

    def _step(self, seq: int) -> int:
        """Publish the entries from `seq` on that exist and return the next number, or wait for one."""
        entries, watched = self._read_from(seq)
        for offset, data in enumerate(entries):
            self._publish(seq + offset, data)
        seq += len(entries)
        if not watched:
            return seq
        if self.kick.wait(timeout=SAFETY_POLL):
            return seq
        changes = self.io.call(self.zk.exists_async, self._p("log")).cversion
        if changes == self._seen_changes:
            return seq
        self._seen_changes = changes
        return self._after_gap(seq)

    def _read_from(self, seq: int) -> tuple[list[bytes], bool]:
        """The consecutive entries from `seq` on, and whether a watch now waits for the next one.

        Up to date (the last read reached the end), a follower reads the new entry together with an `exists`
        watch on the one after, in one round trip: two requests per change. A watch on an existing entry
        stays until the entry is trimmed, so a follower that is behind reads without watches, doubling its
        batch up to READ_AHEAD entries per round trip, and arms the watch where its reads found the end. (An
        up-to-date follower that a burst overtakes leaves one, on the burst's first entry: the price of not
        spending a second round trip on every change.)"""
        self.kick.clear()
        batch = self._batch
        pending = [self.zk.get_async(self._p("log", entry_name(seq + i))) for i in range(batch)]
        after = self.zk.exists_async(self._p("log", entry_name(seq + 1)), watch=self._wake) if batch == 1 else None
        entries: list[bytes] = []
        for result in pending:
            try:
                data, _ = self.io.wait(result)
            except NoNodeError:
                break
            entries.append(data)
        next_exists = after is not None and self.io.wait(after) is not None
        if len(entries) == batch and (batch > 1 or next_exists):
            self._batch = min(READ_AHEAD, batch * 2)  # behind: read more at once
            return entries, False
        self._batch = 1
        if len(entries) == batch:
            return entries, True  # up to date, and the watch on the next entry is armed
        missing = self._p("log", entry_name(seq + len(entries)))
        return entries, self.io.call(self.zk.exists_async, missing, watch=self._wake) is None

    def _after_gap(self, seq: int) -> int:
        """The entry `seq` may never come: the next existing one (or `seq` while none is later)."""
        if self.io.call(self.zk.exists_async, self._p("log", entry_name(seq))) is not None:
            return seq
        later = sorted(s for n in self.io.get_children(self._p("log")) if (s := int(n[2:])) > seq)
        if not later:
            return seq
        if seq < floor(self.io, self.root):
            log.warning("change log trimmed past this watcher (at %d): resync", seq)
            self.publish([Change("resync", "*", "", None, None, seq)])
        return later[0]

    def _publish(self, seq: int, data: bytes) -> None:
        entry = json.loads(data.decode())
        self.publish(Change(c["op"], c["kind"], c["id"], c["old"], c["new"], seq) for c in entry["changes"])


def floor(io: Any, root: str) -> int:
    try:
        data, _ = io.get(f"{root}/log-floor")
    except NoNodeError:
        return 0
    return int(data.decode())


def maybe_trim(zk: KazooClient, io: Any, root: str, seq: int) -> None:
    """Once every TRIM_EVERY commits, delete entries older than the last LOG_KEEP."""
    if seq % TRIM_EVERY or seq < LOG_KEEP:
        return
    io.put(f"{root}/log-floor", str(seq - LOG_KEEP).encode())
    for name in io.get_children(f"{root}/log"):
        if int(name[2:]) < seq - LOG_KEEP:
            zk.delete_async(f"{root}/log/{name}")  # not waited for: the writer's request goes on
