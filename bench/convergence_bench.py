"""Multi-host benchmark (root): one JSON document, every figure measured in this run.

Three hosts on one underlay (kumo.testing.fabric: host namespaces, `kumo agent` each, a real ZooKeeper,
the API on it).

- convergence: a rule added to a chain that every host's flows went through, through the REST API; the time
  from just before the API call until every host has removed the affected kernel flows (each agent stamps
  the wall-clock time at which it applied a topology change and removed its flows; the hosts share this
  machine's clock). p50/p99 over the changes; target p99 < 200 ms.
- cross-host throughput: iperf3 VM -> VM on one bridge, host 1 -> host 2 through Kumo's VXLAN, as a ratio of
  a plain kernel VXLAN link between the same two host namespaces (same underlay, inner MTU 1450);
  medians of alternated runs; target >= 0.85.

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

from kumo.testing.fabric import Fabric, FabricHost
from kumo.testing.netns import Vm, inside

PLAIN_PORT = 4790  # the plain VXLAN link's UDP port (Kumo's device has 4789)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ping_all(vms: list[tuple[Vm, str]]) -> None:
    for vm, _ in vms:
        for other, address in vms:
            if other is not vm:
                vm.ping(address, wait=0.5)


def convergence(fabric: Fabric, vms: list[tuple[Vm, str]], chain: str, changes: int) -> dict[str, Any]:
    api = fabric.client()
    took = []
    for i in range(changes):
        ping_all(vms)  # flows through the chain on every host
        start = time.time()
        port = {"start": 1000 + i, "end": 1000 + i}  # a rule that changes no verdict: only the invalidation counts
        api.collection("rules").create(chain_id=chain, type="accept", nw_proto=17, tp_dst=port)
        removed_at: dict[str, float] = {}
        deadline = time.monotonic() + 10
        while len(removed_at) < len(fabric.hosts) and time.monotonic() < deadline:
            for host in fabric.hosts:
                applied = host.agent_stats()["topology_changes_applied"]
                done = [c["at"] for c in applied if c["at"] > start and c["flows_removed"] > 0]
                if done:
                    removed_at[host.host_id] = min(done)
            time.sleep(0.01)
        if len(removed_at) < len(fabric.hosts):
            raise RuntimeError(f"change {i}: only {sorted(removed_at)} removed flows within 10 s")
        took.append(max(removed_at.values()) - start)
    ms = 1000.0
    return {
        "hosts": len(fabric.hosts),
        "changes": changes,
        "p50_ms": round(percentile(took, 0.5) * ms, 1),
        "p99_ms": round(percentile(took, 0.99) * ms, 1),
        "max_ms": round(max(took) * ms, 1),
        "target_p99_ms": 200,
    }


def plain_vxlan(a: FabricHost, b: FabricHost) -> tuple[str, str]:
    """A kernel VXLAN link between two host namespaces (VNI 4242, UDP 4790), inner MTU 1450."""
    for host, peer, inner in ((a, b, "192.168.77.1"), (b, a, "192.168.77.2")):
        run = host.prefix
        link = ["id", "4242", "dstport", str(PLAIN_PORT), "remote", peer.tunnel_ip, "local", host.tunnel_ip]
        subprocess.run([*run, "ip", "link", "add", "plainvx", "type", "vxlan", *link, "dev", "underlay0"], check=True)
        subprocess.run([*run, "ip", "addr", "add", f"{inner}/24", "dev", "plainvx"], check=True)
        subprocess.run([*run, "ip", "link", "set", "plainvx", "mtu", "1450", "up"], check=True)
    return "192.168.77.1", "192.168.77.2"


def iperf3(prefix: list[str], server_prefix: list[str], address: str, seconds: int) -> float:
    server = subprocess.Popen([*server_prefix, "iperf3", "-s", "-1"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        command = [*prefix, "iperf3", "-c", address, "-t", str(seconds), "-J"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
        if done.returncode != 0:
            raise RuntimeError(f"iperf3 to {address}: {done.stdout[-1000:]}{done.stderr[-1000:]}")
        return float(json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"])
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=5, help="length of each iperf3 run")
    parser.add_argument("--iperf-runs", type=int, default=3)
    args = parser.parse_args()

    result: dict[str, Any] = {"benchmark": "convergence"}
    with tempfile.TemporaryDirectory() as tmp, Fabric(Path(tmp), hosts=3) as fabric, inside(fabric.netns):
        api = fabric.client()
        bridge = api.collection("bridges").create(name="bench")["id"]
        chain = api.collection("chains").create(name="bench-filter")["id"]
        api.collection("bridges").update(bridge, inbound_filter_id=chain)
        vms = []
        for host in fabric.hosts:
            vm = host.vm(f"b{host.index}")
            address = f"10.0.1.{10 + host.index}"
            vm.address(f"{address}/24")
            port = api.collection("ports").create(device_id=bridge)
            api.bind_port(port["id"], host.host_id, vm.interface)
            vms.append((vm, address))
        for _ in range(40):
            if vms[0][0].ping(vms[1][1], wait=0.5) and vms[0][0].ping(vms[2][1], wait=0.5):
                break
        result["convergence_after_api_change"] = convergence(fabric, vms, chain, args.changes)

        h1, h2 = fabric.hosts[0], fabric.hosts[1]
        _, inner2 = plain_vxlan(h1, h2)
        vm1, vm2 = vms[0][0], vms[1][0]
        plain, kumo = [], []
        for _ in range(args.iperf_runs):  # alternated, so that the machine's drift hits both alike
            plain.append(iperf3(h1.prefix, h2.prefix, inner2, args.seconds))
            in_vm1, in_vm2 = ["ip", "netns", "exec", vm1.netns], ["ip", "netns", "exec", vm2.netns]
            kumo.append(iperf3(in_vm1, in_vm2, vms[1][1], args.seconds))
        result["cross_host_iperf3_gbit_s"] = {
            "plain_vxlan_runs": [round(v / 1e9, 2) for v in plain],
            "kumo_vm_to_vm_runs": [round(v / 1e9, 2) for v in kumo],
            "plain_vxlan_median": round(statistics.median(plain) / 1e9, 2),
            "kumo_vm_to_vm_median": round(statistics.median(kumo) / 1e9, 2),
        }
        result["cross_host_ratio_to_plain_vxlan"] = round(statistics.median(kumo) / statistics.median(plain), 3)
        result["cross_host_target_ratio"] = 0.85
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
