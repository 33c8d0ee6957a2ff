"""The l4state topology on a Fabric (tests and bench): one router with two uplinks on hosts 2 and 3 in a
stateful port group, an "external" namespace behind both, and a VM on host 1 behind a tenant bridge.

    vm1 (10.0.1.11, host 1) -- bridge tenant -- router edge -- uplink A 192.0.2.2     (host 2) -- ext eth0
                                                             \\- uplink B 198.51.100.2 (host 3) -- ext eth1

ext has 203.0.113.1 and 203.0.113.2 on lo. Floating IP 198.18.0.10 <-> vm1 (DNAT; ext reaches it via A,
vm1's replies leave via B); dynamic SNAT to 198.18.0.50:20000-29999 (out via A towards 203.0.113.1, replies
come in via B): return traffic always comes back through the other uplink. vm1's port admits only return
traffic, ICMP, ARP and new connections to TCP 8080 / UDP 5001.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kumo.client import Client
from kumo.testing.fabric import Fabric, FabricHost, two_legged
from kumo.testing.netns import Vm

FIP, SNAT_IP = "198.18.0.10", "198.18.0.50"


@dataclass
class Edge:
    fabric: Fabric
    api: Client
    vm1: Vm
    ext: Vm
    ids: dict[str, str] = field(default_factory=dict)
    extra: list[tuple[Vm, FabricHost]] = field(default_factory=list)


def build_edge(fabric: Fabric) -> Edge:
    h1, h2, h3 = fabric.hosts
    api = fabric.client()
    bridge = api.collection("bridges").create(name="tenant")["id"]
    rid = api.collection("routers").create(name="edge")["id"]
    rp = api.collection("ports").create(device_id=rid, port_address="10.0.1.1", network_cidr="10.0.1.0/24")
    bp = api.collection("ports").create(device_id=bridge)
    api.link_ports(bp["id"], rp["id"])
    vm1 = h1.vm("vm1")
    vm1.address("10.0.1.11/24", "10.0.1.1")
    vm_port = api.collection("ports").create(device_id=bridge, name="vm1")
    api.bind_port(vm_port["id"], h1.host_id, vm1.interface)

    ext, leg_b = two_legged(h2, h3, "ext")  # eth0 behind uplink A (host 2), eth1 behind uplink B (host 3)
    for cmd in (
        ("addr", "add", "203.0.113.1/32", "dev", "lo"),
        ("addr", "add", "203.0.113.2/32", "dev", "lo"),
        ("route", "add", f"{FIP}/32", "via", "192.0.2.2"),  # to the floating IP: in through A
        ("route", "add", f"{SNAT_IP}/32", "via", "198.51.100.2"),  # to the SNAT address: in through B
    ):
        ext.run("ip", *cmd, check=True)

    group = api.collection("port_groups").create(name="uplinks", stateful=True)["id"]
    uplinks = {}
    for name, host, interface, address in (("a", h2, ext.interface, "192.0.2.2"), ("b", h3, leg_b, "198.51.100.2")):
        network = address.rsplit(".", 1)[0] + ".0/24"
        port = api.collection("ports").create(
            device_id=rid, name=f"uplink-{name}", port_address=address, network_cidr=network, port_group_ids=[group]
        )
        api.bind_port(port["id"], host.host_id, interface)
        uplinks[name] = port["id"]
    routes = api.collection("routes")
    routes.create(router_id=rid, dst_cidr="203.0.113.1/32", next_hop_port_id=uplinks["a"], next_hop_gateway="192.0.2.1")
    routes.create(
        router_id=rid, dst_cidr="203.0.113.2/32", next_hop_port_id=uplinks["b"], next_hop_gateway="198.51.100.1"
    )

    chains = api.collection("chains")
    rules = api.collection("rules")
    pre, post, vm_in = (
        chains.create(name="pre")["id"],
        chains.create(name="post")["id"],
        chains.create(name="vm1")["id"],
    )
    both = [uplinks["a"], uplinks["b"]]
    rules.create(
        chain_id=pre,
        type="dnat",
        nw_dst=f"{FIP}/32",
        nat_targets=[{"address_from": "10.0.1.11", "address_to": "10.0.1.11"}],
    )
    rules.create(chain_id=pre, type="rev_snat", in_port_ids=both)
    rules.create(chain_id=post, type="rev_dnat", out_port_ids=both)
    snat = [{"address_from": SNAT_IP, "address_to": SNAT_IP, "port_from": 20000, "port_to": 29999}]
    rules.create(chain_id=post, type="snat", out_port_ids=both, nat_targets=snat)
    api.collection("routers").update(rid, inbound_filter_id=pre, outbound_filter_id=post)
    # vm1's firewall (towards vm1): replies of its own flows, and new connections to its services only
    rules.create(chain_id=vm_in, type="accept", match_return_flow=True)
    rules.create(chain_id=vm_in, type="accept", nw_proto=6, tp_dst={"start": 8080, "end": 8080})
    rules.create(chain_id=vm_in, type="accept", nw_proto=17, tp_dst={"start": 5001, "end": 5001})
    rules.create(chain_id=vm_in, type="accept", nw_proto=1)
    rules.create(chain_id=vm_in, type="drop", dl_type=0x0800)  # (IPv4 only: ARP still reaches vm1)
    api.collection("ports").update(vm_port["id"], outbound_filter_id=vm_in)
    edge = Edge(fabric, api, vm1, ext, {"bridge": bridge, "router": rid, "vm_port": vm_port["id"], **uplinks})
    for _ in range(30):
        if vm1.ping("203.0.113.1", wait=0.5):
            return edge
    raise RuntimeError("the l4state topology does not answer: vm1 cannot reach 203.0.113.1 through SNAT")
