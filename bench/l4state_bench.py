"""Stateful-across-hosts benchmark (root): one JSON document, every figure measured in this run.

Three hosts sharing flow state through a real Redis, the l4state topology (kumo.testing.edge): a VM on host 1,
a router whose uplinks on hosts 2 and 3 form a stateful port group, replies always coming back through the
other uplink.

- new stateful flows across hosts: UDP flows from the VM, each a new 5-tuple, SNATed on host 1 (Redis write
  + state push before the first packet leaves), out through host 2, answered by the external namespace, the
  answer coming back through host 3 (reverse SNAT and the VM port's match_return_flow firewall need the
  flow's state there). Flows answered per second, as a ratio of the same traffic between two VMs on a plain
  bridge across the same hosts (no state at all), measured in the same run.
- the share of return flows whose state host 3 had to read from Redis (the rest found it pushed).

Everything runs in namespaces the bench creates and deletes; every load is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kumo.testing.edge import build_edge
from kumo.testing.fabric import Fabric, FabricHost
from kumo.testing.netns import Vm, inside

FLOWS = """
import json, select, socket, sys, time
host, port, count, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
batch = 100
answered = 0
start = time.monotonic()
for first in range(0, count, batch):
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(min(batch, count - first))]
    for s in socks:
        s.setblocking(False)
        s.sendto(b"x", (host, port))
    pending, deadline = set(socks), time.monotonic() + 2.0
    while pending and time.monotonic() < deadline:
        ready, _, _ = select.select(list(pending), [], [], 0.05)
        for s in ready:
            s.recv(16)
            pending.discard(s)
            answered += 1
            last = time.monotonic()
    for s in socks:
        s.close()
    time.sleep(max(0.0, start + (first + batch) / rate - time.monotonic()))  # the offered rate
print(json.dumps({"flows": count, "answered": answered, "seconds": round(last - start, 3)}))
"""


def counters(host: FabricHost) -> dict[str, int]:
    return dict(host.agent_stats()["agent"])


def delta(after: dict[str, int], before: dict[str, int], name: str) -> int:
    return after.get(name, 0) - before.get(name, 0)


def flows(client: Vm, server: Vm, address: str, bind: str, count: int, rate: float) -> dict[str, Any]:
    echo = server.popen(sys.executable, "-m", "kumo.testing.stream", "udp-echo", "7001", bind)
    try:
        time.sleep(0.5)
        done = client.run(
            sys.executable, "-c", FLOWS, address, "7001", str(count), str(rate), timeout=count / rate + 60
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        result: dict[str, Any] = json.loads(done.stdout)
    finally:
        echo.kill()
        echo.wait()
    result["answered_per_s"] = round(result["answered"] / result["seconds"], 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flows", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=1500.0, help="offered new flows per second")
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "l4state"}
    with tempfile.TemporaryDirectory() as tmp, Fabric(Path(tmp), hosts=3, redis=True) as fabric:
        with inside(fabric.netns):
            edge = build_edge(fabric)
            h1, _, h3 = fabric.hosts
            # the same-run baseline: two VMs on a plain bridge, host 1 -> host 3, no chain, no NAT
            plain = edge.api.collection("bridges").create(name="plain")["id"]
            pair = []
            for host, address in ((h1, "10.5.0.1"), (h3, "10.5.0.3")):
                vm = host.vm(f"p{host.index}")
                vm.address(f"{address}/24")
                port = edge.api.collection("ports").create(device_id=plain)
                edge.api.bind_port(port["id"], host.host_id, vm.interface)
                pair.append(vm)
            for _ in range(30):
                if pair[0].ping("10.5.0.3", wait=0.5):
                    break
            baseline = flows(pair[0], pair[1], "10.5.0.3", "10.5.0.3", args.flows, args.rate)

            before1, before3 = counters(h1), counters(h3)
            stateful = flows(edge.vm1, edge.ext, "203.0.113.1", "203.0.113.1", args.flows, args.rate)
            time.sleep(0.5)
            after1, after3 = counters(h1), counters(h3)
        returns = delta(after3, before3, "simulations")
        result["offered_new_flows_per_s"] = args.rate
        result["stateless_bridge_across_hosts"] = baseline
        result["stateful_snat_asymmetric_across_hosts"] = stateful
        result["stateful_ratio_to_stateless"] = round(stateful["answered_per_s"] / baseline["answered_per_s"], 3)
        result["return_host"] = {
            "return_flows_simulated": returns,
            "state_received_by_push": delta(after3, before3, "state_received"),
            "redis_lookups": delta(after3, before3, "flow_state_redis_lookups"),
            "found_only_in_redis": delta(after3, before3, "flow_state_redis_hits"),
            "share_of_return_flows_needing_redis": round(delta(after3, before3, "flow_state_redis_hits") / returns, 3)
            if returns
            else None,
        }
        result["ingress_host"] = {
            "redis_lookups": delta(after1, before1, "flow_state_redis_lookups"),
            "redis_lookup_batches": delta(after1, before1, "flow_state_redis_batches"),
            "provisional_results": delta(after1, before1, "provisional_results"),
            "provisional_results_redone": delta(after1, before1, "provisional_results_redone"),
            "redis_writes": delta(after1, before1, "flow_state_redis_writes"),
            "state_pushed": delta(after1, before1, "state_pushed"),
            "failed_closed": delta(after1, before1, "drop.flow_state_unavailable"),
            "snat_blocks_leased": after1.get("snat_blocks_leased", 0),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
