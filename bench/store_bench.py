"""Store benchmark: creates per second and watch-notification latency (p50/p99) for both backends.

Prints one JSON document. Bounded: a fixed number of operations per measurement. The ZooKeeper run
starts its own server on a free loopback port and stops it. The in-process watch hub's delivery of an
in-memory list append is measured as the baseline of the same run, so that the backends' figures can
be read as ratios to it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kumo.testing.zookeeper import ZooKeeperServer
from kumo.topology.store.base import Change, Store, WatchHub
from kumo.topology.store.sqlite import SqliteStore
from kumo.topology.store.zookeeper import ZookeeperStore, new_chroot


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure_creates(store: Store, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        store.create("bench_bridges", f"b{i}", {"name": f"bridge-{i}", "admin_state_up": True})
    return count / (time.perf_counter() - start)


def measure_watch_latency(store: Store, count: int) -> dict[str, float]:
    """Time from the write call's start to the watcher's callback, one write at a time."""
    arrived = threading.Event()
    stamps: list[float] = []

    def on_change(change: Change) -> None:
        stamps.append(time.perf_counter())
        arrived.set()

    watch = store.watch(on_change, kind="bench_watch")
    latencies = []
    store.create("bench_watch", "w", {"n": 0})
    arrived.wait(5)
    for n in range(1, count + 1):
        arrived.clear()
        sent = time.perf_counter()
        store.update("bench_watch", "w", {"n": n})
        if not arrived.wait(5):
            raise RuntimeError("a watch notification did not arrive within 5 s")
        latencies.append((stamps[-1] - sent) * 1000)
    watch.cancel()
    return {"p50_ms": round(statistics.median(latencies), 3), "p99_ms": round(percentile(latencies, 0.99), 3)}


def baseline_hub_latency(count: int) -> dict[str, float]:
    hub = WatchHub("baseline")
    arrived = threading.Event()
    hub.subscribe(lambda _c: arrived.set(), None, None)
    latencies = []
    for n in range(count):
        arrived.clear()
        sent = time.perf_counter()
        hub.publish([Change("update", "k", str(n), None, {})])
        arrived.wait(5)
        latencies.append((time.perf_counter() - sent) * 1000)
    hub.stop()
    return {"p50_ms": round(statistics.median(latencies), 4), "p99_ms": round(percentile(latencies, 0.99), 4)}


def run_backend(store: Store, creates: int, watches: int) -> dict[str, Any]:
    try:
        return {
            "creates_per_s": round(measure_creates(store, creates)),
            "watch_latency": measure_watch_latency(store, watches),
        }
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument("--watches", type=int, default=500)
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "store", "creates": args.creates, "watch_samples": args.watches}
    result["baseline_in_process_hub"] = baseline_hub_latency(args.watches)
    with tempfile.TemporaryDirectory(prefix="kumo-bench-") as tmp:
        result["sqlite"] = run_backend(SqliteStore(Path(tmp) / "kumo.db"), args.creates, args.watches)
    with ZooKeeperServer() as zk:
        result["zookeeper"] = run_backend(ZookeeperStore(zk.hosts, new_chroot()), args.creates, args.watches)
    base = result["baseline_in_process_hub"]["p50_ms"] or 1e-6
    for backend in ("sqlite", "zookeeper"):
        result[backend]["watch_p50_vs_baseline"] = round(result[backend]["watch_latency"]["p50_ms"] / base, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
