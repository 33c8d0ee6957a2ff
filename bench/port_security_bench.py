"""Port security's cost (root): one JSON document, every figure measured in this run.

The new-flow setup rate (every packet a new 5-tuple, exact flows only, as in datapath_bench.py, offered
faster than the agent sets flows up, with no upcall limit: the agent's own rate) and iperf3 throughput
(VM -> VM through bridge -> router -> bridge), each with the sending
VMs' ports declaring their addresses (port security on) and declaring none (off), alternately in the same run;
medians compared (target: on within 5 % of off).

Everything runs in namespaces the bench creates and deletes; every load is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from datapath_bench import bench_cloud, flow_setup, held_until

from kumo.testing.cloud import Cloud
from kumo.testing.netns import VirtualHost, inside

SENDERS = {"gen": "10.0.1.13", "vm1": "10.0.1.11"}


def port_security(cloud: Cloud, on: bool) -> None:
    ports = cloud.api.collection("ports")
    for name, address in SENDERS.items():
        declared = {"mac_address": cloud.vms[name].mac, "fixed_ips": [address]} if on else {}
        ports.update(cloud.ports[name]["id"], **({"mac_address": None, "fixed_ips": []} | declared))
    time.sleep(1.0)  # (every flow was invalidated: the next packets are simulated with the change)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each setting (medians compared)")
    parser.add_argument("--flows", type=int, default=40000, help="new flows per setup-rate run")
    parser.add_argument("--rate", type=int, default=80000, help="offered new flows per second (above the agent's)")
    parser.add_argument("--seconds", type=int, default=4, help="length of each iperf3 run")
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "port_security", "rounds": args.rounds, "target_ratio": 0.95}
    kumo_args = ("--upcall-rate", "0", "--max-masks-per-port", "0")  # (the agent's own rate, no limit)
    with tempfile.TemporaryDirectory() as tmp, VirtualHost(Path(tmp), kumo_args) as host, inside(host.netns):
        cloud = bench_cloud(host)
        server = cloud.vms["vm3"].popen("iperf3", "-s", stdout=subprocess.DEVNULL)
        runs: dict[str, dict[str, list[float]]] = {s: {"flows_per_s": [], "iperf3_gbit_s": []} for s in ("on", "off")}
        try:
            for _ in range(args.rounds):
                for setting in ("off", "on"):
                    port_security(cloud, setting == "on")
                    rate = cloud.vms["vm1"].iperf3("10.0.2.13", args.seconds)
                    runs[setting]["iperf3_gbit_s"].append(round(rate / 1e9, 2))
                    held_until(host, False, timeout=15.0, period=0.5)
                    runs[setting]["flows_per_s"].append(flow_setup(cloud, args.flows, args.rate)["flows_per_s"])
        finally:
            server.kill()
            server.wait()
        for measure in ("flows_per_s", "iperf3_gbit_s"):
            on, off = statistics.median(runs["on"][measure]), statistics.median(runs["off"][measure])
            every = {s: runs[s][measure] for s in runs}
            result[measure] = {"on": on, "off": off, "ratio": round(on / off, 3), "runs": every}
        drops = host.agent_stats()["agent"]
        result["port_security_drops"] = {k: v for k, v in drops.items() if k.startswith("drop.port_security")}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
