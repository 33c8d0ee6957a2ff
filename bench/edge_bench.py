"""The BGP edge (root): one JSON document, every figure measured in this run.

Three hosts on a real ZooKeeper (kumo.testing.fabric) and the topology of kumo.testing.bgp with four
uplinks: a and c on host 2, b and d on host 3, each peering over eBGP with a BIRD 2 of its own; all four
learn the external LAN, so the router holds four equal routes to it. A VM on every host.

- failover: BIRD a stops (a graceful Cease: the speaker notices at once). Measured from the moment the
  speaker noticed (`down_at` in the state row host 2's agent writes, wall clock) and from the BIRD's stop, until every
  host has removed the kernel flows that went through the router (each agent stamps the wall-clock time at
  which it applied a topology change and removed flows; the hosts share this machine's clock). p50/p99
  over the trials; target: within 1 s of the speaker noticing.
- ecmp: 2,000 flows (VM -> external host, TCP, distinct source ports) traced through the real simulation on
  the learned routes: the share whose uplink changed when one of the four equal uplinks went (BIRD c
  stopped), and when it came back. Ideal 1/4 each way, and no flow of another uplink moving. The baseline
  measured in the same run: "hash mod N" over the same flows (ECMP as MidoNet and most routers did it).

Everything runs in namespaces the bench creates and deletes; every load is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kumo.packet import ip_to_int
from kumo.packet.flowhash import flow_hash
from kumo.simulation.trace import trace
from kumo.simulation.view import SNAPSHOT_KINDS
from kumo.testing.bgp import EXT_HOST, EXTERNAL, BgpEdge, build_bgp_edge
from kumo.testing.fabric import Fabric
from kumo.testing.netns import Vm, inside
from kumo.topology.bgp import BGP_PEER_STATE
from kumo.topology.state import ARP_TABLE, HOSTS_ALIVE, LEARNED_ROUTES, MAC_TABLE
from kumo.topology.store.zookeeper import ZookeeperStore

NAMES = ("a", "b", "c", "d")
ROUTE_STEP = re.compile(r"^route \S+ to \S+ via (\S+)$")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def until(probe: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {seconds} s: {what}")
        time.sleep(0.02)


def learned_via(edge: BgpEdge) -> set[str]:
    by_port = {port: name for name, port in edge.uplinks.items()}
    return {by_port[r["next_hop_port_id"]] for r in edge.routes(EXTERNAL) if r.get("learned")}


def whole(edge: BgpEdge) -> bool:
    return all(edge.peer(n)["state"] == "established" for n in edge.peers) and learned_via(edge) == set(NAMES)


def extra_vms(edge: BgpEdge) -> list[Vm]:
    """A VM on hosts 2 and 3 too, on the tenant bridge, so that every host has flows through the router."""
    api = edge.api
    bridge = next(b["id"] for b in api.bridges.list() if b["name"] == "tenant")
    vms = [edge.vm1]
    for index, host in enumerate(edge.fabric.hosts[1:], start=12):
        vm = host.vm(f"vm{index}")
        vm.address(f"10.0.1.{index}/24", "10.0.1.1")
        port = api.ports.create(device_id=bridge, name=f"vm{index}")
        api.bind_port(port["id"], host.host_id, vm.interface)
        vms.append(vm)
    return vms


def failover(edge: BgpEdge, store: ZookeeperStore, vms: list[Vm], trials: int) -> dict[str, Any]:
    hosts = edge.fabric.hosts
    from_notice, from_stop = [], []
    for trial in range(trials):
        until(lambda: whole(edge), 60, f"trial {trial}: every session established and every route learned")
        for vm in vms:  # flows through the router on every host, over every uplink
            for _ in range(3):
                vm.ping(EXT_HOST, count=1, wait=0.5)
        stopped = time.time()
        edge.birds["a"].stop()
        removed_at: dict[str, float] = {}
        deadline = time.monotonic() + 10
        while len(removed_at) < len(hosts) and time.monotonic() < deadline:
            for host in hosts:
                applied = host.agent_stats()["topology_changes_applied"]
                done = [c["at"] for c in applied if c["at"] > stopped and c["flows_removed"] > 0]
                if done:
                    removed_at[host.host_id] = min(done)
            time.sleep(0.01)
        if len(removed_at) < len(hosts):
            raise RuntimeError(f"trial {trial}: only {sorted(removed_at)} removed flows within 10 s")
        row = store.state_get(BGP_PEER_STATE, edge.peers["a"]) or {}
        noticed = row.get("down_at") or 0.0
        if noticed < stopped:
            raise RuntimeError(f"trial {trial}: host 2's agent did not report the session down: {row}")
        from_notice.append(max(removed_at.values()) - noticed)
        from_stop.append(max(removed_at.values()) - stopped)
        edge.birds["a"].start()
    ms = 1000.0

    def summary(values: list[float]) -> dict[str, float]:
        return {
            "p50_ms": round(percentile(values, 0.5) * ms, 1),
            "p99_ms": round(percentile(values, 0.99) * ms, 1),
            "max_ms": round(max(values) * ms, 1),
        }

    return {
        "hosts": len(hosts),
        "trials": trials,
        "speaker_noticed_to_every_host_moved": summary(from_notice),
        "peer_stopped_to_every_host_moved": summary(from_stop),
        "target_ms": 1000,
    }


class Frozen:
    """The store as it is now, read once: traces of many flows without a read per trace."""

    def __init__(self, store: ZookeeperStore) -> None:
        self.lists = {kind: store.list(kind) for kind in SNAPSHOT_KINDS}
        self.states = {t: store.state_list(t) for t in (HOSTS_ALIVE, LEARNED_ROUTES, MAC_TABLE, ARP_TABLE)}

    def list(self, kind: str, **_: Any) -> list[dict[str, Any]]:
        return self.lists.get(kind, [])

    def state_list(self, table: str) -> dict[str, dict[str, Any]]:
        return self.states.get(table, {})


def choices(edge: BgpEdge, store: ZookeeperStore, port_id: str, sports: range) -> dict[int, str]:
    """Source port -> the uplink (name) the simulation routes the flow through."""
    frozen = Frozen(store)
    by_port = {port: name for name, port in edge.uplinks.items()}
    out = {}
    for sport in sports:
        packet = {"ip_src": "10.0.1.11", "ip_dst": EXT_HOST, "proto": "tcp", "src_port": sport, "dst_port": 80}
        steps = trace(frozen, port_id, packet)["steps"]  # type: ignore[arg-type]
        hops = [m[1] for s in steps if (m := ROUTE_STEP.match(s["what"]))]
        out[sport] = by_port[hops[0]]
    return out


def mod_n(sports: range, paths: list[str]) -> dict[int, str]:
    """ECMP by hash mod N over the same flows (the baseline)."""
    src, dst = ip_to_int("10.0.1.11"), ip_to_int(EXT_HOST)
    return {s: paths[flow_hash((src, dst, 6, s, 80)) % len(paths)] for s in sports}


def moved(before: dict[int, str], after: dict[int, str]) -> float:
    return round(sum(before[k] != after[k] for k in before) / len(before), 4)


def ecmp(edge: BgpEdge, store: ZookeeperStore, flows: int) -> dict[str, Any]:
    vm_port = next(p["id"] for p in edge.api.ports.list() if p.get("name") == "vm1")
    sports = range(20000, 20000 + flows)
    until(lambda: whole(edge), 60, "four uplinks learned")
    four = choices(edge, store, vm_port, sports)
    edge.birds["c"].stop()
    until(lambda: learned_via(edge) == {"a", "b", "d"}, 10, "uplink c withdrawn")
    three = choices(edge, store, vm_port, sports)
    edge.birds["c"].start()
    until(lambda: whole(edge), 60, "uplink c back")
    back = choices(edge, store, vm_port, sports)
    others_moved = sum(four[s] != three[s] for s in sports if four[s] != "c")
    base_four, base_three = mod_n(sports, list(NAMES)), mod_n(sports, ["a", "b", "d"])
    return {
        "flows": flows,
        "share_per_uplink": {n: round(list(four.values()).count(n) / flows, 4) for n in NAMES},
        "moved_when_one_of_4_went": moved(four, three),
        "moved_when_it_came_back": moved(three, back),
        "flows_of_other_uplinks_moved": others_moved,
        "same_as_before_after_the_round_trip": round(sum(four[s] == back[s] for s in sports) / flows, 4),
        "ideal_each_way": 0.25,
        "baseline_hash_mod_n": {
            "moved_when_one_of_4_went": moved(base_four, base_three),
            "moved_when_it_came_back": moved(base_three, base_four),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--flows", type=int, default=2000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kumo-edge-bench-"))
    with Fabric(workdir, hosts=3) as fabric, inside(fabric.netns):
        edge = build_bgp_edge(fabric, workdir, hold_time=3, names=NAMES)
        store = ZookeeperStore(fabric.zookeeper.hosts, fabric.chroot, credentials=fabric.credentials)
        try:
            vms = extra_vms(edge)
            result = {
                "bench": "edge",
                "failover": failover(edge, store, vms, args.trials),
                "ecmp": ecmp(edge, store, args.flows),
            }
        finally:
            store.close()
            edge.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
