"""`kumo demo` / `make demo`: a small cloud with living traffic on this machine (root).

It starts `kumo up` (API + agent + eBPF datapath) in a host network namespace of its own, declares two
tenant bridges and a router with firewall chains, NAT and DHCP through the REST API, plugs four VM
namespaces into it, addresses them with udhcpc through Kumo's DHCP, and shows a ping across the router, an
iperf3 transfer, a firewall rule cutting a live connection the moment it is added, `kumo trace` and
`kumo flows`. It ends with a screenshot of the live picture (/ui, in headless Chromium) and says where the
picture and the metrics are while the cloud is up; `--keep` keeps the cloud up until Ctrl-C and forwards this
machine's 127.0.0.1:8181 (API and picture) and :9481 (agent metrics) into its namespace. Everything it made
(namespaces, BPF programs, processes) is removed at the end, also on Ctrl-C or failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from kumo.cli import render
from kumo.cli.trace import wide_console
from kumo.client import Client
from kumo.topology.errors import KumoError
from kumo.topology.resources import SPECS


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


DHCP_SCRIPT = """#!/bin/sh
# udhcpc's lease script: configure eth0 as a DHCP client would
case "$1" in bound|renew)
  ip addr flush dev "$interface"
  ip addr add "$ip/$mask" dev "$interface"
  [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
  [ -n "$router" ] && ip route replace default via "$router"
  echo "$ip mtu=$mtu gateway=$router" > "$LEASE"
esac
"""

# The sample cloud's VM ports (and their DHCP MACs), plus a fourth VM on the database bridge.
VMS = (
    ("web-1", "web-1-port", "02:00:00:00:01:01"),
    ("web-2", "web-2-port", "02:00:00:00:01:02"),
    ("db-1", "db-1-port", "02:00:00:00:02:01"),
    ("db-2", "db-2-port", "02:00:00:00:02:02"),
)


API_PORT = 8181
METRICS_PORT = 9481
DEFAULT_OUT = Path("/tmp/kumo-demo")  # the screenshot goes here (outside the repository)


def run_demo(keep: bool = False, out: Path = DEFAULT_OUT) -> None:
    if os.geteuid() != 0:
        raise KumoError(
            "kumo demo builds network namespaces and loads eBPF programs: run it as root (sudo make demo)",
            code="demo_needs_root",
        )
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM cleans up as Ctrl-C does
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (Ctrl-C, even if started where SIGINT is ignored)
    console = wide_console()
    try:
        _run(console, keep, out)
    except KeyboardInterrupt:
        console.print("[bold yellow]Interrupted[/]: namespaces, BPF programs and processes removed.")
        raise SystemExit(130) from None
    console.print("[bold green]Done[/]: namespaces, BPF programs and processes removed.")


def _run(console: Any, keep: bool, out: Path) -> None:
    from kumo.testing import forward
    from kumo.testing.netns import VirtualHost, inside

    # (made before entering the demo's namespace: they listen on this machine's loopback)
    listening: list[tuple[Any, int]] = []
    try:
        for port in (API_PORT, METRICS_PORT) if keep else ():
            try:
                listening.append((forward.listen(port), port))
            except OSError as exc:
                raise KumoError(
                    f"kumo demo --keep opens the demo to this machine's 127.0.0.1:{port}, which is taken "
                    f"({exc.strerror}): stop what listens there (a `kumo up`?) or run the demo without --keep",
                    code="demo_port_taken",
                ) from None
        with (
            tempfile.TemporaryDirectory(prefix="kumo-demo-") as tmp,
            VirtualHost(Path(tmp), kumo_args=("--metrics-listen", f"127.0.0.1:{METRICS_PORT}")) as host,
            inside(host.netns),
            Client(f"http://127.0.0.1:{host.api.port if host.api else API_PORT}") as client,
        ):
            console.print(f"[bold]Kumo demo[/]: kumo up (API + agent + eBPF datapath) in namespace {host.netns}")
            _living_demo(console, host, client, Path(tmp))
            _picture_and_metrics(console, host, client, out)
            if keep:
                for server, port in listening:
                    forward.forward(server, host.netns, port)
                _keep_up(console)
    finally:
        for server, _ in listening:
            server.close()


def _picture_and_metrics(console: Any, host: Any, client: Client, out: Path) -> None:
    from kumo.testing.browser import screenshot

    _step(console, "the live picture (/ui) in headless Chromium, and the metrics")
    web1 = next(p for p in client.ports.list() if p["name"] == "web-1-port")
    deadline = time.monotonic() + 10  # (the agent publishes the ports' counters every 5 s: drawn once there)
    while time.monotonic() < deadline and not client.request("GET", f"/v1/ports/{web1['id']}/stats")["host_id"]:
        time.sleep(0.5)
    out.mkdir(parents=True, exist_ok=True)
    trace = f"?port={web1['id']}&src=10.0.1.11&dst=10.0.9.10&proto=tcp&dport=5432"
    try:
        shot = screenshot(f"http://127.0.0.1:{API_PORT}/ui{trace}", out / "topology.png", netns=host.netns)
        console.print(f"screenshot of the picture, with a trace from web-1: [bold]{shot}[/]")
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        console.print(f"[yellow]no screenshot[/]: {exc}")
    metrics = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text  # (this thread is inside)
    families = sorted({line.split()[2] for line in metrics.splitlines() if line.startswith("# TYPE kumo_port")})
    console.print(f"agent metrics: {metrics.count(chr(10))} lines, per-port families {', '.join(families)}")
    console.print(
        f"While the cloud is up, inside namespace {host.netns}: the picture http://127.0.0.1:{API_PORT}/ui, "
        f"the API's metrics http://127.0.0.1:{API_PORT}/metrics, the agent's http://127.0.0.1:{METRICS_PORT}/metrics "
        f"(e.g. `ip netns exec {host.netns} curl -s http://127.0.0.1:{METRICS_PORT}/metrics`). "
        "`make demo KEEP=1` (kumo demo --keep) keeps the cloud up and opens them to this machine's browser."
    )


def _keep_up(console: Any) -> None:
    console.print(
        f"\n[bold green]The cloud stays up[/] until Ctrl-C. From this machine: the picture "
        f"http://127.0.0.1:{API_PORT}/ui, metrics http://127.0.0.1:{METRICS_PORT}/metrics (agent) and "
        f"http://127.0.0.1:{API_PORT}/metrics (API); the CLI: KUMO_API=http://127.0.0.1:{API_PORT} kumo bridge list"
    )
    while True:
        time.sleep(3600)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _step(console: Any, text: str) -> None:
    console.print(f"\n[bold cyan]==>[/] [bold]{text}[/]")


def _living_demo(console: Any, host: Any, client: Client, tmp: Path) -> None:
    from kumo.testing.netns import Vm

    built = build_sample_cloud(client)
    db_bridge = built["bridges"][1]
    db_subnet = next(s for s in client.dhcp_subnets.list(bridge_id=db_bridge["id"]))
    client.dhcp_hosts.create(subnet_id=db_subnet["id"], mac="02:00:00:00:02:02", ip_address="10.0.2.21", name="db-2")
    client.ports.create(device_id=db_bridge["id"], name="db-2-port")
    show_cloud(client, built)

    _step(console, "four VM namespaces plugged in; udhcpc asks Kumo's DHCP for their addresses")
    script = tmp / "udhcpc.sh"
    script.write_text(DHCP_SCRIPT)
    script.chmod(0o755)
    ports = {p["name"]: p for p in client.ports.list()}
    vms: dict[str, Vm] = {}
    for name, port, mac in VMS:
        vm = host.vm(name, mac=mac)
        client.bind_port(ports[port]["id"], host.host_id, vm.interface)
        vms[name] = vm
    time.sleep(1.0)  # the agent attaches to the new interfaces
    rows = []
    for name, vm in vms.items():
        lease = tmp / f"lease-{name}"
        done = vm.udhcpc(script, lease)
        got = lease.read_text().strip() if lease.exists() else f"no lease ({done.stderr.strip()[-200:]})"
        rows.append({"vm": name, "mac": vm.mac, "lease": got})
    render.print_table(rows, ("vm", "mac", "lease"), title="DHCP leases")

    _step(console, "ping web-1 (10.0.1.11) -> db-2 (10.0.2.21), across the router")
    console.print(vms["web-1"].run("ping", "-c", "3", "-i", "0.2", "10.0.2.21").stdout, markup=False)

    _step(console, "iperf3 web-1 -> db-2 for 3 s, every packet in the kernel after the first")
    server = vms["db-2"].popen("iperf3", "-s", "-1", stdout=-3, stderr=-3)
    try:
        time.sleep(0.5)
        rate = vms["web-1"].iperf3("10.0.2.21", 3)
        console.print(f"{rate / 1e9:.2f} Gbit/s")
    finally:
        server.kill()
        server.wait()

    _step(console, "a live TCP connection web-2 -> db-2:80, then a firewall rule dropping TCP 80 to db-2")
    _firewall_cut(console, client, ports["db-2-port"], vms["web-2"], vms["db-2"], tmp)

    _step(console, "kumo trace --port web-1-port --src 10.0.1.11 --dst 10.0.9.10 --proto tcp --dst-port 5432")
    trace = host.kumo(
        "trace",
        "--port",
        "web-1-port",
        "--src",
        "10.0.1.11",
        "--dst",
        "10.0.9.10",
        "--proto",
        "tcp",
        "--dst-port",
        "5432",
    )
    console.print(trace.stdout or trace.stderr, markup=False, highlight=False)

    _step(console, "kumo flows (the kernel flows of this host, first 24 lines)")
    flows = host.kumo("flows", "--state-dir", str(host.state_dir))
    lines = (flows.stdout or flows.stderr).splitlines()
    console.print("\n".join(lines[:24] + ([f"... ({lines[-1]})"] if len(lines) > 24 else [])), markup=False)


def _firewall_cut(console: Any, client: Client, port: dict[str, Any], src: Any, dst: Any, tmp: Path) -> None:
    from kumo.testing.stream import last_received

    record = tmp / "received"
    stream = ("-m", "kumo.testing.stream")
    server = dst.popen(sys.executable, *stream, "server", "80", str(record))
    client_proc = None
    try:
        time.sleep(0.5)
        client_proc = src.popen(sys.executable, *stream, "client", "10.0.2.21", "80", stderr=-3)
        chain = client.chains.create(name="db-2-guard")
        client.ports.update(port["id"], outbound_filter_id=chain["id"])  # an empty filter: accepts all
        time.sleep(1.5)
        flowing = time.time() - last_received(record)
        cut = time.time()
        rule = client.rules.create(chain_id=chain["id"], type="drop", nw_proto=6, tp_dst={"start": 80, "end": 80})
        time.sleep(1.5)
        stopped = last_received(record)
        console.print(
            f"stream flowing (last bytes {flowing * 1000:.0f} ms before the rule); rule added: the last bytes "
            f"arrived {(stopped - cut) * 1000:+.0f} ms from the API call, none in the "
            f"{time.time() - stopped:.1f} s since"
        )
        client.rules.delete(rule["id"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and last_received(record) == stopped:
            time.sleep(0.1)
        resumed = last_received(record) > stopped
        console.print("rule removed: the connection " + ("resumed" if resumed else "did not resume within 10 s"))
    finally:
        for proc in (client_proc, server):
            if proc is not None:
                proc.kill()
                proc.wait()
