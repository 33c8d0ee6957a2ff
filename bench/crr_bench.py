"""Connection-rate benchmark (root): one JSON document, every figure measured in this run.

TCP connect / 1-byte request / 1-byte response / close (netperf's TCP_CRR), with a small C client and server
(bench/crr.c, compiled here), one connection at a time and 8 in parallel, through:
- one bridge (two VMs on it);
- bridge -> router -> bridge;
- the same, with a firewall on the server's port: its chain towards the server accepts return flows
  (match_return_flow), then new TCP connections to the service port, and drops the rest;
- across two hosts (VXLAN), the client's bridge -> router -> the server's bridge, the same firewall.
Each path's rate is a ratio to a baseline measured alternately with it in the same run: two fresh namespaces
joined by a plain veth pair for the one-host paths, and for the two-host path the same two host namespaces
joined by a plain kernel VXLAN link (a Linux bridge and a VXLAN device in each host, on another UDP port).
Also: the agent's upcalls per connection once the path is known (each path is warmed up first). Every run
connects to a service port of its own and the clients may use 64,512 source ports, so that a run's
connections are new 5-tuples to the datapath (flows of earlier runs are still installed); a run with more
connections than that says so (`source_ports_reused_in_a_run`).

Everything runs in namespaces the bench creates and deletes; every load is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kumo.client import Client
from kumo.testing.cloud import build_cloud
from kumo.testing.fabric import Fabric, FabricHost
from kumo.testing.netns import HostNamespace, VirtualHost, Vm, inside, ip, veth_pair

PORT = 5001
SERVICE_PORTS = 64  # the server listens on PORT .. PORT+63; each run uses the next (below)
EPHEMERAL = (1024, 65535)  # the clients' source ports: a run's connections use distinct 5-tuples up to this many
MTU = 1450
_next_port = itertools.count()


def compile_crr(workdir: Path) -> Path:
    compiler = shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise SystemExit("crr_bench needs gcc or clang (make setup installs them)")
    binary = workdir / "crr"
    source = Path(__file__).with_name("crr.c")
    subprocess.run([compiler, "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


@contextlib.contextmanager
def crr_server(vm: Vm, binary: Path, workers: int = 8) -> Iterator[None]:
    proc = vm.popen(str(binary), "server", str(PORT), str(SERVICE_PORTS), str(workers), start_new_session=True)
    try:
        time.sleep(0.3)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            subprocess.run(["pkill", "-9", "-s", str(proc.pid)], check=False)
        proc.kill()
        proc.wait()


def crr(client: Vm, binary: Path, address: str, seconds: float, workers: int) -> dict[str, Any]:
    """One run, to a service port no earlier run used (its 5-tuples are new: no flow of an earlier run, still
    installed, can serve them)."""
    port = PORT + next(_next_port) % SERVICE_PORTS
    client.run("sysctl", "-qw", f"net.ipv4.ip_local_port_range={EPHEMERAL[0]} {EPHEMERAL[1]}", check=True)
    done = client.run(str(binary), "client", address, str(port), str(seconds), str(workers), timeout=seconds + 30)
    if done.returncode != 0:
        raise RuntimeError(f"crr client failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    result["per_s"] = round(result["connections"] / result["seconds"], 1)
    result["source_ports_reused"] = result["connections"] > EPHEMERAL[1] - EPHEMERAL[0] + 1
    return result


@contextlib.contextmanager
def veth_baseline(binary: Path) -> Iterator[Vm]:
    """Two fresh namespaces joined by a veth pair (10.9.0.1 -> 10.9.0.2), the server running in the second."""
    with veth_pair(MTU) as (a, b), crr_server(b, binary):
        yield a


def firewall(api: Client, server_port_id: str) -> None:
    """The server's port: return flows accepted, new TCP connections to PORT accepted, the rest dropped."""
    chain = api.collection("chains").create(name="server-in")
    rules = api.collection("rules")
    rules.create(chain_id=chain["id"], type="accept", match_return_flow=True)
    service = {"start": PORT, "end": PORT + SERVICE_PORTS - 1}
    rules.create(chain_id=chain["id"], type="accept", nw_proto=6, tp_dst=service)
    rules.create(chain_id=chain["id"], type="drop")
    api.collection("ports").update(server_port_id, outbound_filter_id=chain["id"])


def upcalls(host: HostNamespace) -> int:
    return int(host.agent_stats()["agent"].get("upcalls", 0))


def measure(
    name: str,
    run_path: Callable[[float, int], dict[str, Any]],
    run_baseline: Callable[[float, int], dict[str, Any]],
    hosts: list[HostNamespace],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The path and its baseline, alternately, `args.rounds` times for each parallelism; medians compared."""
    run_path(0.5, 1)  # warm-up: the path becomes known (its first connections go to the agents)
    out: dict[str, Any] = {}
    for workers in (1, 8):
        paths, bases, calls, conns, reused = [], [], 0, 0, False
        for _ in range(args.rounds):
            bases.append(run_baseline(args.seconds, workers)["per_s"])
            before = sum(upcalls(h) for h in hosts)
            result = run_path(args.seconds, workers)
            calls += sum(upcalls(h) for h in hosts) - before
            conns += result["connections"]
            reused |= result["source_ports_reused"]
            paths.append(result["per_s"])
        path, base = statistics.median(paths), statistics.median(bases)
        out[f"parallel_{workers}"] = {
            "connections_per_s": path,
            "baseline_per_s": base,
            "ratio": round(path / base, 3) if base else None,
            "runs": paths,
            "baseline_runs": bases,
            "upcalls_per_connection": round(calls / conns, 4) if conns else None,
            "source_ports_reused_in_a_run": reused,  # (then some connections were not new to the datapath)
        }
    print(f"{name}: {json.dumps(out)}", file=sys.stderr)
    return out


def one_host(binary: Path, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, VirtualHost(Path(tmp)) as host, inside(host.netns):
        cloud = build_cloud(host)
        client = cloud.attach("vm1", "web", "10.0.1.11/24", gateway="10.0.1.1")
        cloud.attach("vm2", "web", "10.0.1.12/24", gateway="10.0.1.1")
        cloud.attach("vm3", "db", "10.0.2.13/24", gateway="10.0.2.1")
        for _ in range(20):
            if client.ping("10.0.1.12", wait=0.5) and client.ping("10.0.2.13", wait=0.5):
                break

        def baseline(seconds: float, workers: int) -> dict[str, Any]:
            with veth_baseline(binary) as a:
                return crr(a, binary, "10.9.0.2", seconds, workers)

        with crr_server(cloud.vms["vm2"], binary), crr_server(cloud.vms["vm3"], binary):
            paths = (("one_bridge", "10.0.1.12"), ("bridge_router_bridge", "10.0.2.13"))
            for name, address in paths:
                result[name] = measure(
                    name, lambda s, w, a=address: crr(client, binary, a, s, w), baseline, [host], args
                )
            firewall(cloud.api, cloud.ports["vm3"]["id"])
            result["bridge_router_bridge_firewall"] = measure(
                "bridge_router_bridge_firewall",
                lambda s, w: crr(client, binary, "10.0.2.13", s, w),
                baseline,
                [host],
                args,
            )
        result["agent"] = {k: v for k, v in host.agent_stats().items() if k in ("kernel_flows", "megaflow_masks")}
    return result


@contextlib.contextmanager
def plain_vxlan(first: FabricHost, second: FabricHost, binary: Path) -> Iterator[Vm]:
    """A namespace on each host, joined by a Linux bridge and a plain VXLAN device (VNI 4242, UDP 4790) in
    each host namespace: the kernel's own overlay between the same two hosts. Yields the client (10.8.0.1);
    the server (10.8.0.2) runs on `second`."""
    tag = uuid.uuid4().hex[:4]
    ends = []
    for host, other, address in ((first, second, "10.8.0.1/24"), (second, first, "10.8.0.2/24")):
        vm = host.vm(f"x{tag}")
        vm.address(address)
        ns = host.netns
        ip("-n", ns, "link", "add", "kbr0", "type", "bridge")
        vxlan = ("id", "4242", "dstport", "4790", "remote", other.tunnel_ip, "local", host.tunnel_ip)
        ip("-n", ns, "link", "add", "kvx0", "type", "vxlan", *vxlan, "dev", "underlay0")
        for device in (vm.interface, "kvx0"):
            ip("-n", ns, "link", "set", device, "master", "kbr0")
        ip("-n", ns, "link", "set", "kvx0", "up")
        ip("-n", ns, "link", "set", "kbr0", "up")
        ends.append(vm)
    try:
        with crr_server(ends[1], binary):
            yield ends[0]
    finally:
        for host in (first, second):
            ip("-n", host.netns, "link", "del", "kvx0", check=False)
            ip("-n", host.netns, "link", "del", "kbr0", check=False)


def two_hosts(binary: Path, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, Fabric(Path(tmp), hosts=2) as fabric:
        first, second = fabric.hosts
        with inside(fabric.netns):
            api = fabric.client()
            rtr = api.collection("routers").create(name="rtr")["id"]
            vms = []
            for host, third in ((first, 1), (second, 2)):
                bridge = api.collection("bridges").create(name=f"net{third}")["id"]
                rp = api.collection("ports").create(
                    device_id=rtr, port_address=f"10.0.{third}.1", network_cidr=f"10.0.{third}.0/24"
                )
                bp = api.collection("ports").create(device_id=bridge)
                api.link_ports(bp["id"], rp["id"])
                vm = host.vm(f"vm{third}")
                vm.address(f"10.0.{third}.1{third}/24", f"10.0.{third}.1")
                port = api.collection("ports").create(device_id=bridge, name=f"vm{third}")
                api.bind_port(port["id"], host.host_id, vm.interface)
                vms.append((vm, port))
            client, (server, server_port) = vms[0][0], vms[1]
            for _ in range(30):
                if client.ping("10.0.2.12", wait=0.5):
                    break
            firewall(api, server_port["id"])
        with plain_vxlan(first, second, binary) as plain:

            def baseline(seconds: float, workers: int) -> dict[str, Any]:
                return crr(plain, binary, "10.8.0.2", seconds, workers)

            with crr_server(server, binary):
                return measure(
                    "two_hosts_firewall",
                    lambda s, w: crr(client, binary, "10.0.2.12", s, w),
                    baseline,
                    list(fabric.hosts),
                    args,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.5, help="length of each measured run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each path and of its baseline (medians)")
    parser.add_argument("--skip-two-hosts", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "crr", "seconds": args.seconds, "rounds": args.rounds, "target_ratio": 0.8}
    with tempfile.TemporaryDirectory() as tmp:
        binary = compile_crr(Path(tmp))
        result["one_host"] = one_host(binary, args)
        if not args.skip_two_hosts:
            result["two_hosts_firewall"] = two_hosts(binary, args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
