"""Acceptance of the foundation, through `kumo api` and the CLI alone (issue: foundation).

Two bridges, a router linked to both, routes, a chain with one rule of every type, a port group, an IP
address group, a DHCP subnet with a host entry, a load balancer with pool, member, VIP and health monitor,
a tunnel zone with members; list, show, set, delete; persistence across a killed `kumo api`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kumo.testing.processes import ApiProcess
from kumo.testing.zookeeper import ZooKeeperServer
from kumo.topology.store.zookeeper import new_chroot
from tests.scenarios.conftest import Cli

RULE_TYPES = [
    "accept",
    "drop",
    "reject",
    "return",
    "continue",
    "jump",
    "dnat",
    "snat",
    "rev_dnat",
    "rev_snat",
]


def build_topology(kumo: Cli) -> dict[str, str]:
    ids: dict[str, str] = {}
    ids["web"] = kumo("bridge", "create", "--name", "web", "--tenant-id", "acme")["id"]
    ids["db"] = kumo("bridge", "create", "--name", "db", "--tenant-id", "acme")["id"]
    ids["r1"] = kumo("router", "create", "--name", "r1", "--asn", "65001")["id"]
    for net, third in (("web", 1), ("db", 2)):
        kumo(
            "port",
            "create",
            "--device",
            "r1",
            "--name",
            f"r1-{net}",
            "--port-address",
            f"10.0.{third}.1",
            "--network-cidr",
            f"10.0.{third}.0/24",
        )
        kumo("port", "create", "--device", net, "--name", f"{net}-up")
        linked = kumo("port", "link", f"{net}-up", f"r1-{net}")
        assert linked["peer_id"]
    ids["uplink"] = kumo(
        "port",
        "create",
        "--device",
        "r1",
        "--name",
        "uplink",
        "--port-address",
        "192.0.2.2",
        "--network-cidr",
        "192.0.2.0/24",
    )["id"]
    kumo(
        "route",
        "create",
        "--router",
        "r1",
        "--dst-cidr",
        "0.0.0.0/0",
        "--next-hop-port",
        "uplink",
        "--next-hop-gateway",
        "192.0.2.1",
    )
    kumo("route", "create", "--router", "r1", "--dst-cidr", "203.0.113.0/24", "--type", "blackhole")
    ids["vm1"] = kumo("port", "create", "--device", "web", "--name", "vm1")["id"]
    kumo("port", "bind", "vm1", "--host", "host-1", "--interface", "tap-vm1")

    ids["fw"] = kumo("chain", "create", "--name", "fw")["id"]
    kumo("chain", "create", "--name", "fw-extra")
    ids["pg"] = kumo("port-group", "create", "--name", "web-servers", "--stateful", "true")["id"]
    ids["admins"] = kumo("ip-addr-group", "create", "--name", "admins", "--addresses", "10.0.9.1,10.0.9.2")["id"]
    extra = {
        "accept": ["--match-return-flow", "true"],
        "drop": [
            "--nw-proto",
            "6",
            "--tp-dst",
            "23",
            "--ip-addr-group-src",
            "admins",
            "--inv-ip-addr-group-src",
            "true",
        ],
        "reject": ["--nw-src", "10.66.0.0/16", "--in-port-ids", "vm1"],
        "return": ["--port-group", "web-servers"],
        "continue": ["--dl-type", "0x0800"],
        "jump": ["--jump-chain", "fw-extra"],
        "dnat": ["--nat-targets", "10.0.1.10", "--nw-dst", "192.0.2.10/32"],
        "snat": ["--nat-targets", "192.0.2.2:1024-65535", "--out-port-ids", "uplink"],
        "rev_dnat": [],
        "rev_snat": ["--flow-action", "continue"],
    }
    for rule_type in RULE_TYPES:
        kumo("chain", "rule", "add", "fw", "--type", rule_type, *extra[rule_type])
    kumo("router", "set", "r1", "--inbound-filter", "fw")

    ids["subnet"] = kumo(
        "dhcp-subnet",
        "create",
        "--bridge",
        "web",
        "--cidr",
        "10.0.1.0/24",
        "--gateway",
        "10.0.1.1",
        "--dns-servers",
        "10.0.1.1",
        "--routes",
        "10.9.0.0/16,10.0.1.1",
    )["id"]
    kumo(
        "dhcp-host",
        "create",
        "--subnet",
        ids["subnet"],
        "--mac",
        "02:00:00:00:01:01",
        "--ip-address",
        "10.0.1.11",
        "--name",
        "vm1",
        "--extra-options",
        "42=10.0.1.1",
    )

    kumo("load-balancer", "create", "--router", "r1", "--name", "lb1")
    kumo("health-monitor", "create", "--name", "hm1", "--delay", "5", "--timeout", "2")
    kumo("pool", "create", "--load-balancer", "lb1", "--health-monitor", "hm1", "--name", "pool1")
    kumo("pool-member", "create", "--pool", "pool1", "--address", "10.0.1.11", "--protocol-port", "8080")
    kumo(
        "vip",
        "create",
        "--pool",
        "pool1",
        "--address",
        "192.0.2.10",
        "--protocol-port",
        "80",
        "--name",
        "vip1",
    )
    kumo("bgp-peer", "create", "--router", "r1", "--asn", "65000", "--address", "192.0.2.1")
    kumo("bgp-network", "create", "--router", "r1", "--cidr", "198.51.100.0/24")

    ids["tz"] = kumo("tunnel-zone", "create", "--name", "underlay")["id"]
    kumo("tunnel-zone", "member", "add", "underlay", "host-1", "--ip", "192.0.2.11")
    kumo("tunnel-zone", "member", "add", "underlay", "host-2", "--ip", "192.0.2.12")
    return ids


def check_topology(kumo: Cli, ids: dict[str, str]) -> None:
    assert {b["name"] for b in kumo("bridge", "list")} == {"web", "db"}
    ports = {p["name"]: p for p in kumo("port", "list")}
    assert set(ports) == {"r1-web", "r1-db", "web-up", "db-up", "uplink", "vm1"}
    assert ports["web-up"]["peer_id"] == ports["r1-web"]["id"]
    assert ports["vm1"]["interface_name"] == "tap-vm1"
    routes = kumo("route", "list", "--router", "r1")
    assert len(routes) == 3 * 2 + 2  # LOCAL + network route per router port, and two declared
    rules = kumo("chain", "rule", "list", "fw")
    assert [r["type"] for r in rules] == RULE_TYPES
    assert [r["position"] for r in rules] == list(range(1, 11))
    assert kumo("tunnel-zone", "member", "list", "underlay")[0]["ip_address"].startswith("192.0.2.1")
    assert kumo("dhcp-host", "list", "--subnet", ids["subnet"])[0]["ip_address"] == "10.0.1.11"
    assert kumo("vip", "show", "vip1")["protocol_port"] == 80


def test_operator_builds_and_manages_a_cloud_with_the_cli(tmp_path: Path) -> None:
    db = tmp_path / "kumo.db"
    api = ApiProcess(f"sqlite://{db}", tmp_path / "api.log")
    try:
        api.start()
        kumo = Cli(api.url)
        ids = build_topology(kumo)
        check_topology(kumo, ids)

        # show and set, by name and by id
        assert kumo("router", "show", "r1")["asn"] == 65001
        assert kumo("router", "set", ids["r1"], "--name", "edge")["name"] == "edge"
        assert kumo("port-group", "set", "web-servers", "--stateful", "false")["stateful"] is False
        assert kumo("dhcp-subnet", "set", ids["subnet"], "--mtu", "1400")["mtu"] == 1400
        assert kumo("pool", "set", "pool1", "--lb-method", "source_ip")["lb_method"] == "source_ip"
        assert kumo("port", "set", "vm1", "--port-group-ids", "web-servers")["port_group_ids"] == [ids["pg"]]
        kumo("router", "set", "edge", "--name", "r1")

        # persistence: a crash (SIGKILL) of the API loses nothing
        api.kill()
        api.start()
        check_topology(kumo, ids)

        # a trace through the CLI: bridge -> router, one readable line per step
        traced = kumo.run("trace", "--port", "vm1", "--src", "10.0.1.20", "--dst", "10.0.2.30", "--dst-port", "5432")
        assert traced.returncode == 0, traced.stderr
        assert "bridge web" in traced.stdout and "router r1" in traced.stdout and "router.routing" in traced.stdout
        assert "=> park (waiting_for_arp)" in traced.stdout
        assert kumo("trace", "--port", "vm1", "--src", "10.0.1.20", "--dst", "10.0.2.30")["result"]["action"] == "park"

        # clear errors: one line, exit 1
        assert "still used as inbound_filter_id" in kumo.fails("chain", "delete", "fw")
        assert "already linked" in kumo.fails("port", "link", "web-up", "r1-db")
        assert "no bridge with id or name 'nope'" in kumo.fails("bridge", "show", "nope")
        assert "already bound" in kumo.fails("port", "bind", "uplink", "--host", "host-1", "--interface", "tap-vm1")
        assert "not inside network_cidr" in kumo.fails(
            "port", "create", "--device", "r1", "--port-address", "10.5.0.1", "--network-cidr", "10.6.0.0/24"
        )
        assert "No such option" in kumo.fails("bridge", "create", "--nmae", "x")

        # a rule naming one of the bridge's ports keeps it (409) until the rule lets go of it
        reject_rule = next(r for r in kumo("chain", "rule", "list", "fw") if r["type"] == "reject")
        assert f"used as in_port_ids of rule {reject_rule['id']}" in kumo.fails("bridge", "delete", "web")
        kumo("rule", "set", reject_rule["id"], "--in-port-ids", "none")

        # deleting a bridge removes its ports and unlinks the router's peer port
        kumo("bridge", "delete", "web")
        names = {p["name"] for p in kumo("port", "list")}
        assert "web-up" not in names and "vm1" not in names
        assert kumo("port", "show", "r1-web")["peer_id"] is None
        assert kumo("dhcp-subnet", "list", "--bridge", "db") == []

        # delete everything else
        kumo("router", "set", "r1", "--inbound-filter", "none")
        kumo("chain", "rule", "delete", kumo("chain", "rule", "list", "fw")[0]["id"])
        assert len(kumo("chain", "rule", "list", "fw")) == 9
        kumo("chain", "delete", "fw")
        kumo("chain", "delete", "fw-extra")
        kumo("tunnel-zone", "member", "delete", "underlay", "host-2")
        kumo("tunnel-zone", "delete", "underlay")
        kumo("ip-addr-group", "delete", "admins")
        kumo("port-group", "delete", "web-servers")
        kumo("router", "delete", "r1")
        kumo("health-monitor", "delete", "hm1")
        kumo("bridge", "delete", "db")
        for resource in ("bridge", "router", "port", "chain", "pool", "vip", "load-balancer", "tunnel-zone"):
            assert kumo(resource, "list") == [], resource
        table = kumo.run("bridge", "list")
        assert table.returncode == 0 and "bridges (0)" in table.stdout
    finally:
        api.stop()


@pytest.mark.zookeeper
def test_two_api_servers_share_one_zookeeper(zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    url = f"zookeeper://{zookeeper.hosts}{new_chroot()}"
    with ApiProcess(url, tmp_path / "a.log") as a, ApiProcess(url, tmp_path / "b.log") as b:
        via_a, via_b = Cli(a.url), Cli(b.url)
        via_a("bridge", "create", "--name", "shared")
        via_b("port", "create", "--device", "shared", "--name", "p1")
        assert [p["name"] for p in via_a("port", "list")] == ["p1"]
        assert "already exists" in via_b.fails("bridge", "create", "--id", via_a("bridge", "show", "shared")["id"])
        via_b("bridge", "delete", "shared")
        assert via_a("port", "list") == []
        a.kill()
    with ApiProcess(url, tmp_path / "c.log") as c:
        assert Cli(c.url)("bridge", "list") == []


def test_kumo_up_serves_the_api_on_its_state_dir(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    with ApiProcess(None, tmp_path / "up.log", command=["up", "--no-agent", "--state-dir", str(state_dir)]) as up:
        kumo = Cli(up.url)
        kumo("bridge", "create", "--name", "b1")
        assert (state_dir / "kumo.db").exists()
    with ApiProcess(None, tmp_path / "up.log", command=["up", "--no-agent", "--state-dir", str(state_dir)]) as up:
        assert [b["name"] for b in Cli(up.url)("bridge", "list")] == ["b1"]


def test_missing_pieces_say_so(tmp_path: Path) -> None:
    cli = Cli("http://127.0.0.1:9")  # nothing listens on the discard port
    assert "runs inside `kumo up`" in cli.fails("agent", "--host-id", "h1", "--store", "sqlite:///tmp/x.db")
    bad_state = cli.fails("agent", "--store", "zookeeper://127.0.0.1:9/k", "--flow-state", "memcached://x")
    assert "redis://[:PASSWORD@]HOST:PORT/DB" in bad_state and "rediss://" in bad_state
    assert "is not an IPv4 address" in cli.fails("agent", "--store", "zookeeper://127.0.0.1:9/k", "--tunnel-ip", "x")
    assert "no agent answers" in cli.fails("flows", "--state-dir", str(tmp_path))
    assert "no agent answers" in cli.fails("agent", "stats", "--state-dir", str(tmp_path))
    assert "cannot reach the Kumo API" in cli.fails("bridge", "list")
    assert "use ADDRESS:PORT" in cli.fails("api", "--store", "sqlite:///tmp/x.db", "--listen", "nonsense")
    assert "unknown store URL" in cli.fails("api", "--store", "mysql://x", "--listen", "127.0.0.1:9")
