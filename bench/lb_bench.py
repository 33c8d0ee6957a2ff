"""Load-balancer benchmark (root): one JSON document, every figure measured in this run.

TCP_CRR connections/s (bench/crr.c: connect, 1-byte request, 1-byte response, close; one connection at a time
and 8 in parallel) from one client through a VIP, as a ratio of the same client to the member directly
(bridge -> router -> bridge), measured alternately in the same run, on one host. The VIP has one member, the
same server, so that the ratio is the cost of load balancing alone: a connection to a VIP is bound to its
member per connection (DNAT), so its first packet and its first reply each go through the agent, where a
connection to the member directly needs the agent for its reply only (a reply from a member may be one to
a VIP's connection: it is looked up per connection). Also: upcalls per connection. Storm control is off
(`--upcall-rate 0`): the bench measures the agent's rate, not the per-port limit.

Each run connects to a service port of its own (crr_bench.py says why): 64 VIPs, one per service port, each
with its own pool whose member is the server on that port. Everything runs in namespaces the bench creates
and deletes; every load is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from crr_bench import PORT, SERVICE_PORTS, compile_crr, crr, crr_server, measure

from kumo.testing.cloud import build_cloud
from kumo.testing.netns import VirtualHost, inside

VIP = "192.0.2.10"
MEMBER = "10.0.2.13"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.5, help="length of each measured run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each path and of its baseline (medians)")
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "lb", "seconds": args.seconds, "rounds": args.rounds}
    # (storm control off: 8 clients offer more first packets per port than its default 5,000/s, and a held port
    # would measure storm control instead of load balancing)
    agent = ("--upcall-rate", "0")
    with tempfile.TemporaryDirectory() as tmp, VirtualHost(Path(tmp), kumo_args=agent) as host, inside(host.netns):
        binary = compile_crr(Path(tmp))
        cloud = build_cloud(host)
        client = cloud.attach("vm1", "web", "10.0.1.11/24", gateway="10.0.1.1")
        server = cloud.attach("vm3", "db", f"{MEMBER}/24", gateway="10.0.2.1")
        api = cloud.api
        balancer = api.collection("load_balancers").create(router_id=cloud.ids["rtr"])["id"]
        for port in range(PORT, PORT + SERVICE_PORTS):
            pool = api.collection("pools").create(load_balancer_id=balancer)["id"]
            api.collection("pool_members").create(pool_id=pool, address=MEMBER, protocol_port=port)
            api.collection("vips").create(pool_id=pool, address=VIP, protocol_port=port)
        for _ in range(20):
            if client.ping(MEMBER, wait=0.5):
                break
        with crr_server(server, binary):
            result["through_a_vip"] = measure(
                "through_a_vip",
                lambda s, w: crr(client, binary, VIP, s, w),
                lambda s, w: crr(client, binary, MEMBER, s, w),
                [host],
                args,
            )
        result["agent"] = {k: v for k, v in host.agent_stats().items() if k in ("kernel_flows",)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
