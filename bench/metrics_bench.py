"""Metrics benchmark (root): one JSON document, every figure measured in this run.

An agent holding 100,000 kernel flows (exact flows from a generator, as in datapath_bench.py), with its
metrics served (`--metrics-listen`):
- how long a scrape of its /metrics takes (each a full exposition, as Prometheus fetches it);
- first-packet latency (datapath_bench.py's one-way probes) with nothing scraping, and while a scraper fetches
  /metrics every second and every 100 ms (scrape intervals are commonly 15 s or more), alternated.

Everything runs in namespaces the bench creates and deletes; every load is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from datapath_bench import bench_cloud, first_packet, held_until, percentile, storm

from kumo.testing.netns import VirtualHost, inside

METRICS = "127.0.0.1:9481"


def scrape_s() -> float:
    started = time.monotonic()
    with urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=10) as answer:
        answer.read()
    return time.monotonic() - started


class Scraper:
    """Fetches /metrics every `period` seconds from a thread (inside `netns`: namespaces are per thread), until
    stopped."""

    def __init__(self, period: float, netns: str) -> None:
        self.period = period
        self.netns = netns
        self.stop = threading.Event()
        self.took: list[float] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with inside(self.netns):
            while not self.stop.wait(self.period):
                self.took.append(scrape_s())

    def __enter__(self) -> Scraper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flows", type=int, default=100_000, help="kernel flows installed first")
    parser.add_argument("--rate", type=int, default=15_000, help="their offered rate (new flows per second)")
    parser.add_argument("--scrapes", type=int, default=50, help="timed scrapes")
    parser.add_argument("--probes", type=int, default=500, help="first packets per latency run")
    parser.add_argument("--rounds", type=int, default=3, help="latency runs of each kind (alternated)")
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "metrics", "target_scrape_ms": 100}
    kumo_args = ("--upcall-rate", "20000", "--max-masks-per-port", "0", "--max-flows", str(args.flows + 20_000))
    kumo_args = (*kumo_args, "--metrics-listen", METRICS)
    with tempfile.TemporaryDirectory() as tmp, VirtualHost(Path(tmp), kumo_args) as host, inside(host.netns):
        cloud = bench_cloud(host)
        proc = storm(cloud.vms["gen"], cloud.vms["sink"], args.flows / args.rate + 10, args.flows, args.rate)
        proc.communicate(timeout=args.flows / args.rate + 60)
        time.sleep(2.0)
        held_until(host, False, timeout=15.0, period=0.5)
        flows = host.agent_stats()["kernel_flows"]
        took = [scrape_s() for _ in range(args.scrapes)]
        result["scrape"] = {
            "kernel_flows": flows,
            "scrapes": args.scrapes,
            "p50_ms": round(statistics.median(took) * 1000, 2),
            "p99_ms": round(percentile(took, 0.99) * 1000, 2),
            "max_ms": round(max(took) * 1000, 2),
        }
        result["first_packet_p99_ms"] = {"no_scrapes": [], "scraped_every_1_s": [], "scraped_every_100_ms": []}
        runs = result["first_packet_p99_ms"]
        for _ in range(args.rounds):  # alternated, so that the machine's drift hits each alike
            runs["no_scrapes"].append(first_packet(cloud, args.probes)["first_packet_ms"]["p99"])
            for period, name in ((1.0, "scraped_every_1_s"), (0.1, "scraped_every_100_ms")):
                with Scraper(period, host.netns):
                    runs[name].append(first_packet(cloud, args.probes)["first_packet_ms"]["p99"])
        result["first_packet_p99_median_ms"] = {name: statistics.median(values) for name, values in runs.items()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
