"""Simulation benchmark: simulations per second on one core (JSON).

(a) one L2 bridge, MAC known; (b) bridge -> router -> bridge with a 20-rule chain on each VM port (inbound
on the sender's, outbound on the receiver's) and SNAT on the router's post-routing chain, every packet a
new flow; (c) a wildcard-table hit. Baseline of the same run: parsing the frame into a FlowMatch (the work
any path does per packet). Bounded: a fixed number of iterations per case.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from kumo.flowstate.local import LocalFlowState
from kumo.packet import ip_to_int
from kumo.packet.ethernet import ETH_P_IP, Ethernet
from kumo.packet.frame import parse_frame
from kumo.packet.ipv4 import PROTO_TCP, IPv4
from kumo.packet.tcp import Tcp
from kumo.simulation import MemoryLearned, Verdict, simulate
from kumo.simulation.view import snapshot_of
from kumo.simulation.wildcard import WildcardTable
from kumo.topology.service import Topology
from kumo.topology.store.sqlite import SqliteStore

VM1, VM2, VM3 = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"


def frame(src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int) -> bytes:
    s, d = ip_to_int(src), ip_to_int(dst)
    return Ethernet(dst_mac, src_mac, ETH_P_IP, IPv4(s, d, PROTO_TCP, Tcp(sport, dport).build(s, d)).build()).build()


def build() -> tuple[Topology, dict[str, Any]]:
    topo = Topology(SqliteStore(":memory:"))
    web, db = topo.create("bridges", {})["id"], topo.create("bridges", {})["id"]
    rtr = topo.create("routers", {})["id"]
    ids: dict[str, Any] = {"web": web, "db": db, "rtr": rtr}
    for name, bridge in (("vm1", web), ("vm2", web), ("vm3", db)):
        ids[name] = topo.bind(topo.create("ports", {"device_id": bridge})["id"], "h", f"tap-{name}")["id"]
    for net, third in ((web, 1), (db, 2)):
        rp = topo.create(
            "ports", {"device_id": rtr, "port_address": f"10.0.{third}.1", "network_cidr": f"10.0.{third}.0/24"}
        )
        topo.link(topo.create("ports", {"device_id": net})["id"], rp["id"])
        ids[f"rp{third}"] = rp
    # 20 rules per VM port, the last one the accept (the worst case: every rule evaluated)
    for port, field in (("vm1", "inbound_filter_id"), ("vm3", "outbound_filter_id")):
        chain = topo.create("chains", {})["id"]
        for n in range(19):
            topo.create(
                "rules",
                {"chain_id": chain, "type": "drop", "nw_proto": 6, "tp_dst": {"start": 10000 + n, "end": 10000 + n}},
            )
        topo.create("rules", {"chain_id": chain, "type": "accept"})
        topo.update("ports", ids[port], {field: chain})
    post = topo.create("chains", {})["id"]
    topo.create(
        "rules",
        {
            "chain_id": post,
            "type": "snat",
            "nat_targets": [
                {"address_from": "10.0.2.1", "address_to": "10.0.2.1", "port_from": 1024, "port_to": 65535}
            ],
        },
    )
    topo.update("routers", rtr, {"outbound_filter_id": post})
    return topo, ids


REPEATS = 5  # each rate is measured this many times; the best and the median are reported (timeit's practice)


def rates(fn: Callable[[int], object], count: int, fresh: Callable[[], None] = lambda: None) -> list[float]:
    out = []
    for _ in range(REPEATS):
        fresh()
        start = time.perf_counter()
        for i in range(count):
            fn(i)
        out.append(count / (time.perf_counter() - start))
    return sorted(out)


def summary(values: list[float]) -> dict[str, int]:
    return {"best": round(values[-1]), "median": round(values[len(values) // 2])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20000)
    args = parser.parse_args()
    topo, ids = build()
    snap = snapshot_of(topo.store)
    learned = MemoryLearned()
    learned.macs[(ids["web"], VM2, None)] = ids["vm2"]
    learned.macs[(ids["db"], VM3, None)] = ids["vm3"]
    learned.arps[(ids["rtr"], ip_to_int("10.0.2.13"))] = VM3
    state = LocalFlowState()
    l2_frames = [frame(VM1, VM2, "10.0.1.11", "10.0.1.12", 1024 + i % 60000, 80) for i in range(1000)]
    routed_frames = [
        frame(VM1, ids["rp1"]["port_mac"], "10.0.1.11", "10.0.2.13", 1024 + i % 60000, 80) for i in range(args.count)
    ]
    vm1 = ids["vm1"]

    check = simulate(parse_frame(routed_frames[0], vm1), snap, learned, state)
    assert check.verdict is Verdict.OUTPUT and "ip_src" in check.rewrites, check.describe()

    baseline = rates(lambda i: parse_frame(routed_frames[i], vm1), args.count)
    l2_matches = [parse_frame(f, vm1) for f in l2_frames]
    l2 = rates(lambda i: simulate(l2_matches[i % 1000].copy(), snap, learned, state, trace=False), args.count)
    holder: dict[str, Any] = {}

    def fresh_flows() -> None:  # every repeat: new matches (unmarked) and an empty flow state (new flows)
        holder["matches"] = [parse_frame(f, vm1) for f in routed_frames]
        holder["state"] = LocalFlowState()

    routed = rates(
        lambda i: simulate(holder["matches"][i], snap, learned, holder["state"], trace=False), args.count, fresh_flows
    )
    traced = rates(
        lambda i: simulate(holder["matches"][i], snap, learned, holder["state"], trace=True), args.count, fresh_flows
    )
    table = WildcardTable()
    table.insert(simulate(parse_frame(l2_frames[0], vm1), snap, learned, state))
    hit = rates(lambda i: table.lookup(l2_matches[i % 1000]), args.count)
    assert table.hits == args.count * REPEATS
    result = {
        "benchmark": "simulation",
        "count": args.count,
        "repeats": REPEATS,
        "one_core": True,
        "baseline_parse_frame_per_s": summary(baseline),
        "a_l2_bridge_per_s": summary(l2),
        "b_bridge_router_bridge_20_rules_snat_per_s": summary(routed),
        "b_with_trace_text_per_s": summary(traced),
        "c_wildcard_hit_per_s": summary(hit),
        "b_target_per_s": 20000,
        "median_ratios_to_parse": {
            name: round(values[len(values) // 2] / baseline[len(baseline) // 2], 2)
            for name, values in (("a", l2), ("b", routed), ("c", hit))
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
