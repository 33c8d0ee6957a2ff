"""The cluster's state-push key (kumo.agent.push): 256 random bits in the store's `cluster_keys` table, made by
the first agent that finds none, read by every other, and followed when it changes (an operator rotates it
by deleting the entry: the next agent to start makes a new one, and every agent follows). Whoever can read
the store can read the key: protect the store (ZooKeeper ACLs, docs/many-hosts.md).

Two agents starting together may both find no key and both write one: each reads the entry back after
writing, and every agent follows the entry's changes, so all end up with the one that stayed."""

from __future__ import annotations

import logging
import secrets
import threading

from kumo.topology.store.base import StateChange, Store, Watch

log = logging.getLogger("kumo.agent")

CLUSTER_KEYS = "cluster_keys"
PUSH_KEY = "state_push"


class ClusterKey:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._key = b""
        self._lock = threading.Lock()
        self._watch: Watch | None = None

    def open(self) -> None:
        """Read (or make) the key, then follow it. StoreUnavailable if the store does not answer (the agent's
        start is tried again)."""
        row = self.store.state_get(CLUSTER_KEYS, PUSH_KEY)
        if row is None:
            self.store.state_put(CLUSTER_KEYS, PUSH_KEY, {"key": secrets.token_hex(32)})
            row = self.store.state_get(CLUSTER_KEYS, PUSH_KEY)
            log.info("state push: made the cluster's push key")
        self._set(row)
        if self._watch is None:
            self._watch = self.store.state_watch(CLUSTER_KEYS, self._changed)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    @property
    def key(self) -> bytes:
        with self._lock:
            return self._key

    def _changed(self, change: StateChange) -> None:  # (the store's watch thread)
        if change.key != PUSH_KEY:
            return
        if change.new is None:  # rotated: make the next one (or take another agent's)
            self.open_again()
            return
        self._set(change.new)

    def open_again(self) -> None:
        try:
            row = self.store.state_get(CLUSTER_KEYS, PUSH_KEY)
            if row is None:
                self.store.state_put(CLUSTER_KEYS, PUSH_KEY, {"key": secrets.token_hex(32)})
                row = self.store.state_get(CLUSTER_KEYS, PUSH_KEY)
            self._set(row)
        except Exception:  # the store is away: keep the key we have (pushes may be refused until it is back)
            log.exception("state push: could not read the cluster's push key")

    def _set(self, row: dict[str, str] | None) -> None:
        if row is None or not row.get("key"):
            return
        with self._lock:
            self._key = bytes.fromhex(row["key"])
