"""`kumo demo` / `make demo`: a small cloud declared through the REST API, shown as tables.

It starts the API on a throw-away embedded store on a free loopback port, builds two tenant bridges, a
router linking them with an uplink, tenant firewall chains and SNAT, a DHCP subnet, then prints what it
built and stops. The datapath release turns this into living traffic between namespaces.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from kumo.cli import render
from kumo.cli.trace import names_of, render_trace, wide_console
from kumo.client import Client
from kumo.testing.apiserver import ApiServer
from kumo.topology.resources import SPECS
from kumo.topology.store.sqlite import SqliteStore


def build_sample_cloud(client: Client) -> dict[str, Any]:
    """The demo topology; returns the objects by role so that callers (and tests) can look at them."""
    web = client.bridges.create(name="tenant-a-web", tenant_id="tenant-a")
    db = client.bridges.create(name="tenant-a-db", tenant_id="tenant-a")
    router = client.routers.create(name="tenant-a-router", tenant_id="tenant-a", asn=65010)

    web_gw = client.ports.create(
        device_id=router["id"], name="rtr-web", port_address="10.0.1.1", network_cidr="10.0.1.0/24"
    )
    db_gw = client.ports.create(
        device_id=router["id"], name="rtr-db", port_address="10.0.2.1", network_cidr="10.0.2.0/24"
    )
    uplink = client.ports.create(
        device_id=router["id"], name="uplink", port_address="192.0.2.2", network_cidr="192.0.2.0/24"
    )
    web_trunk = client.ports.create(device_id=web["id"], name="web-to-router")
    db_trunk = client.ports.create(device_id=db["id"], name="db-to-router")
    client.link_ports(web_trunk["id"], web_gw["id"])
    client.link_ports(db_trunk["id"], db_gw["id"])
    client.routes.create(
        router_id=router["id"],
        dst_cidr="0.0.0.0/0",
        next_hop_port_id=uplink["id"],
        next_hop_gateway="192.0.2.1",
    )

    vms = []
    for bridge, name in ((web, "web-1"), (web, "web-2"), (db, "db-1")):
        port = client.ports.create(device_id=bridge["id"], name=f"{name}-port")
        vms.append(client.bind_port(port["id"], "host-1", f"tap-{name}"))

    # Stateful tenant firewall on the database bridge's VM port: replies and SSH/PostgreSQL from web only.
    db_in = client.chains.create(name="db-inbound", tenant_id="tenant-a")
    client.rules.create(chain_id=db_in["id"], type="accept", match_return_flow=True)
    client.rules.create(
        chain_id=db_in["id"],
        type="accept",
        nw_proto=6,
        nw_src="10.0.1.0/24",
        tp_dst={"start": 5432, "end": 5432},
    )
    client.rules.create(chain_id=db_in["id"], type="accept", nw_proto=6, tp_dst={"start": 22, "end": 22})
    client.rules.create(chain_id=db_in["id"], type="drop")
    client.ports.update(vms[2]["id"], outbound_filter_id=db_in["id"])

    # Router post-routing: SNAT tenant traffic leaving through the uplink; pre-routing: reverse it.
    post = client.chains.create(name="router-post", tenant_id="tenant-a")
    client.rules.create(
        chain_id=post["id"],
        type="snat",
        out_port_ids=[uplink["id"]],
        nat_targets=[{"address_from": "192.0.2.2", "address_to": "192.0.2.2", "port_from": 1024, "port_to": 65535}],
    )
    pre = client.chains.create(name="router-pre", tenant_id="tenant-a")
    client.rules.create(chain_id=pre["id"], type="rev_snat", in_port_ids=[uplink["id"]])
    client.routers.update(router["id"], inbound_filter_id=pre["id"], outbound_filter_id=post["id"])

    # Web VMs reach the database through a service address (10.0.9.10:5432), translated by the router.
    client.rules.create(
        chain_id=pre["id"],
        type="dnat",
        nw_proto=6,
        nw_dst="10.0.9.10/32",
        tp_dst={"start": 5432, "end": 5432},
        nat_targets=[{"address_from": "10.0.2.20", "address_to": "10.0.2.20", "port_from": 5432, "port_to": 5432}],
    )
    client.rules.create(chain_id=post["id"], type="rev_dnat")
    db_subnet = client.dhcp_subnets.create(bridge_id=db["id"], cidr="10.0.2.0/24", gateway="10.0.2.1")
    client.dhcp_hosts.create(subnet_id=db_subnet["id"], mac="02:00:00:00:02:01", ip_address="10.0.2.20", name="db-1")

    subnet = client.dhcp_subnets.create(
        bridge_id=web["id"],
        cidr="10.0.1.0/24",
        gateway="10.0.1.1",
        dns_servers=["10.0.1.1"],
        routes=[{"destination": "10.0.2.0/24", "gateway": "10.0.1.1"}],
    )
    client.dhcp_hosts.create(subnet_id=subnet["id"], mac="02:00:00:00:01:01", ip_address="10.0.1.11", name="web-1")
    client.dhcp_hosts.create(subnet_id=subnet["id"], mac="02:00:00:00:01:02", ip_address="10.0.1.12", name="web-2")
    return {
        "bridges": [web, db],
        "router": router,
        "uplink": uplink,
        "vm_ports": vms,
        "chains": [db_in, post, pre],
        "dhcp_subnet": subnet,
    }


def show_cloud(client: Client, built: dict[str, Any]) -> None:
    router_id = built["router"]["id"]
    render.print_table(client.bridges.list(), SPECS["bridges"].columns, title="bridges")
    render.print_table(client.routers.list(), SPECS["routers"].columns, title="routers")
    render.print_table(
        client.ports.list(),
        ("name", "type", "tunnel_key", "port_address", "port_mac", "peer_id", "interface_name"),
        title="ports",
    )
    render.print_table(
        client.routes.list(router_id=router_id),
        ("dst_cidr", "type", "next_hop_gateway", "weight"),
        title="routes of tenant-a-router",
    )
    for chain in client.chains.list():
        render.print_table(
            client.rules.list(chain_id=chain["id"]),
            ("position", "type", "match_return_flow", "nw_proto", "nw_src", "tp_dst", "nat_targets"),
            title=f"chain {chain['name']}",
        )
    subnet = built["dhcp_subnet"]
    render.print_table(
        client.dhcp_hosts.list(bridge_id=subnet["bridge_id"], subnet_id=subnet["id"]),
        ("name", "mac", "ip_address"),
        title=f"DHCP hosts of {subnet['cidr']} (MTU {subnet['mtu']})",
    )


def run_demo() -> None:
    console = wide_console()
    with tempfile.TemporaryDirectory(prefix="kumo-demo-") as tmp:
        store = SqliteStore(Path(tmp) / "kumo.db")
        try:
            with ApiServer(store) as api, Client(api.url) as client:
                console.print(f"[bold]Kumo demo[/]: REST API on {api.url} (embedded store in {tmp})")
                built = build_sample_cloud(client)
                show_cloud(client, built)
                web1 = next(p for p in client.ports.list() if p["name"] == "web-1-port")
                console.print("\n[bold]kumo trace --port web-1-port --src 10.0.1.11 --dst 10.0.9.10 --dst-port 5432[/]")
                journey = client.trace(web1["id"], {"ip_src": "10.0.1.11", "ip_dst": "10.0.9.10", "dst_port": 5432})
                for line in render_trace(journey, names_of(client)):
                    console.print(line, markup=False, highlight=False)
                console.print(
                    "[bold green]Built and traced[/] through the REST API alone. Traffic between namespaces arrives "
                    "with the datapath release; this demo stops here and removes its store."
                )
        finally:
            store.close()
