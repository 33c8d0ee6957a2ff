"""Flow state shared across hosts through Redis (`kumo agent --flow-state redis://HOST:PORT/DB`).

The agent's local tables stay in front: a simulation looks there first, and only a miss asks Redis (a
return flow entering a host that neither saw the forward flow nor got its state pushed: after a restart, a
migration, a lost push). During the packet thread's rounds (`deferring`), a miss does not wait on Redis: it
is answered "absent" at once, the key noted, and the round's noted keys are looked up together in one MGET
at its end, before anything the simulations decided leaves the agent (kumo.agent.provisional). New state is
recorded locally at once and written to Redis in one pipeline per round of upcalls, BEFORE the round's
first packets are forwarded; if that write fails, the round's stateful flows are not forwarded (fail closed,
counted). State of flows in use is written again (refreshed) by the agent; Redis expires what goes idle.

While Redis does not answer, calls are not retried for `BACKOFF` seconds: lookups miss at once (counted),
so that an outage costs the packet thread no more than one timeout per second.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from typing import Any

import redis

from kumo.flowstate.local import DEFAULT_TTL, LocalFlowState
from kumo.simulation.result import StateWrite
from kumo.simulation.view import NatTarget
from kumo.topology.store.urls import redact

log = logging.getLogger("kumo.flowstate")

PREFIX = "kumo:fs:"
TIMEOUT = 0.25  # seconds: a Redis call that takes longer counts as Redis being down
BACKOFF = 1.0  # seconds without calls after a failure

StateKey = tuple[str, tuple[Any, ...]]  # (kind, key)


class FlowStateUnavailable(Exception):
    """Redis did not take this round's new state: its stateful flows must not be forwarded."""


def redis_key(kind: str, key: tuple[Any, ...]) -> str:
    return PREFIX + kind + ":" + json.dumps(key, separators=(",", ":"))


class RedisFlowState:
    def __init__(self, url: str, ttl: float = DEFAULT_TTL, timeout: float = TIMEOUT) -> None:
        self.url = redact(url)  # (for messages: never the password)
        self.ttl = ttl
        self.local = LocalFlowState(ttl=ttl)
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.counters: collections.Counter[str] = collections.Counter()
        self.allocator: Any = None  # SnatBlocks when the agent has a store session (else: local ports)
        self._pending: dict[str, bytes] = {}  # redis key -> value, written at the round's flush
        self._down_until = 0.0
        # a round's deferred lookups (kumo.agent.provisional)
        self.deferring = False  # a miss is answered "absent" now and looked up at the round's end
        self._deferred: set[StateKey] = set()  # the round's keys answered so
        self._unconfirmed: set[StateKey] = set()  # the current simulation's: deferred, or recorded by a provisional one
        self._provisional: set[StateKey] = set()  # recorded this round by simulations not yet confirmed
        self._absent: set[StateKey] = set()  # looked up this round and not found

    # --- what the simulation reads ----------------------------------------------------------------------
    def conntrack_has(self, key: tuple[Any, ...]) -> bool:
        if self.local.conntrack_has(key):
            self._read_local("conntrack", key)
            return True
        found = self._lookup("conntrack", key)
        if found is None:
            return False
        self._adopt("conntrack", key, found)
        return True

    def nat_get(self, key: tuple[Any, ...]) -> tuple[Any, ...] | None:
        value = self.local.nat_get(key)
        if value is not None:
            self._read_local("nat", key)
            return value
        found = self._lookup("nat", key)
        return None if found is None else self._adopt("nat", key, found)

    def _read_local(self, kind: str, key: tuple[Any, ...]) -> None:
        if self._provisional and (kind, key) in self._provisional:
            self._unconfirmed.add((kind, key))  # what this simulation read stands or falls with its writer

    def _adopt(self, kind: str, key: tuple[Any, ...], raw: bytes) -> Any:
        """An entry found in Redis, kept locally from now on (its value returned)."""
        if kind == "conntrack":
            self.local.record("conntrack", key)
            return None
        value = tuple(json.loads(raw))
        self.local.record("nat", key, value)
        if key[0] == "snat-fwd" and self.allocator is not None:
            self.allocator.adopt(key[1], value[0], value[1])  # its port stays ours while the binding lives
        return value

    def snat_allocate(self, router_id: str, targets: list[NatTarget], flow: tuple[Any, ...]) -> tuple[int, int] | None:
        if self.allocator is not None:
            chosen: tuple[int, int] | None = self.allocator.allocate(router_id, targets, flow)
            return chosen
        return self.local.snat_allocate(router_id, targets, flow)

    def _lookup(self, kind: str, key: tuple[Any, ...]) -> bytes | None:
        """The entry's JSON from Redis (None: absent, Redis unavailable, or the answer deferred)."""
        if self._absent and (kind, key) in self._absent:
            return None
        if time.monotonic() < self._down_until:
            self.counters["flow_state_lookup_skipped"] += 1
            return None
        if self.deferring:
            self._deferred.add((kind, key))
            self._unconfirmed.add((kind, key))
            return None
        self.counters["flow_state_redis_lookups"] += 1
        try:
            raw = self.client.get(redis_key(kind, key))
        except redis.RedisError as exc:
            self._failed("lookup", exc)
            return None
        if raw is None:
            return None
        self.counters["flow_state_redis_hits"] += 1
        return raw if isinstance(raw, bytes) else str(raw).encode()

    # --- a round's deferred lookups (kumo.agent.provisional) ----------------------------------------------
    def take_unconfirmed(self) -> set[StateKey]:
        """What the simulation that just ended read without a final answer (empty: its result stands)."""
        unconfirmed, self._unconfirmed = self._unconfirmed, set()
        return unconfirmed

    def hold(self, writes: list[StateWrite]) -> None:
        """These records stand only if their simulation's result is confirmed: what reads them depends on it."""
        self._provisional.update((w.kind, w.key) for w in writes)

    def look_up_deferred(self) -> dict[StateKey, bytes]:
        """The round's deferred keys, looked up in one MGET: those Redis holds, by key (not yet adopted). On
        failure, none (as a failed lookup: the round's writes then fail closed)."""
        keys = list(self._deferred)
        self._deferred.clear()
        if not keys:
            return {}
        self.counters["flow_state_redis_lookups"] += len(keys)
        self.counters["flow_state_redis_batches"] += 1
        try:
            values = self.client.mget([redis_key(kind, key) for kind, key in keys])
        except redis.RedisError as exc:
            self._failed("lookup", exc)
            return {}
        found = {
            key: raw if isinstance(raw, bytes) else str(raw).encode()
            for key, raw in zip(keys, values, strict=True)
            if raw is not None
        }
        self._absent.update(k for k in keys if k not in found)
        self.counters["flow_state_redis_hits"] += len(found)
        return found

    def adopt_found(self, found: dict[StateKey, bytes]) -> None:
        for (kind, key), raw in found.items():
            self._adopt(kind, key, raw)

    def forget(self, writes: list[StateWrite]) -> None:
        """Undo the records of a result that did not stand: locally, and from the round's pending writes."""
        for write in writes:
            self.local.forget(write.kind, write.key, write.value)
            self._pending.pop(redis_key(write.kind, write.key), None)

    def confirm_provisional(self) -> None:
        """The round's records that still stand are final."""
        self._provisional.clear()
        self._unconfirmed.clear()

    def round_settled(self) -> None:
        self.deferring = False
        self._deferred.clear()
        self.confirm_provisional()
        self._absent.clear()

    # --- what the agent writes --------------------------------------------------------------------------
    def record(self, kind: str, key: tuple[Any, ...], value: Any = None) -> None:
        self.local.record(kind, key, value)
        self._pending[redis_key(kind, key)] = json.dumps(value, separators=(",", ":")).encode()

    def learn(self, kind: str, key: tuple[Any, ...], value: Any = None) -> None:
        """State pushed by a peer: kept locally (the peer wrote it to Redis)."""
        self.local.record(kind, key, value)

    def flush(self) -> None:
        """Write the pending state in one pipeline; FlowStateUnavailable if Redis did not take it."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        if time.monotonic() < self._down_until:
            self.counters["flow_state_write_skipped"] += 1
            raise FlowStateUnavailable(f"Redis at {self.url} is unavailable (retrying every {BACKOFF:g} s)")
        try:
            pipe = self.client.pipeline(transaction=False)
            px = int(self.ttl * 1000)
            for rkey, value in pending.items():
                pipe.set(rkey, value, px=px)
            pipe.execute()
            self.counters["flow_state_redis_writes"] += len(pending)
        except redis.RedisError as exc:
            self._failed("write", exc)
            raise FlowStateUnavailable(f"Redis at {self.url}: {exc}") from None

    def discard_pending(self) -> None:
        self._pending.clear()

    def _failed(self, what: str, exc: Exception) -> None:
        self.counters[f"flow_state_{what}_errors"] += 1
        if time.monotonic() >= self._down_until:
            log.warning("flow state: Redis %s failed (%s); new stateful flows fail closed until it answers", what, exc)
        self._down_until = time.monotonic() + BACKOFF

    def expired_keys(self) -> list[tuple[str, tuple[Any, ...]]]:
        return self.local.expired_keys()  # (Redis expires its own copies by TTL)

    def drop_expired(self, keys: list[tuple[str, tuple[Any, ...]]]) -> int:
        return self.local.drop_expired(keys)

    def close(self) -> None:
        self.client.close()
