"""Load balancing an operator can rely on (one host): spread, weights, drain, persistence, UDP, and live
health monitors whose checks leave from the router through the virtual network.

The cloud: client c1 on web (10.0.1.0/24); members m1..m3 on db (10.0.2.0/24), each serving TCP 8080 (its
name to a client, an HTTP answer with the status code in its `code` file to an HTTP request) and UDP 5353
(its name); the VIP 192.0.2.10 on router rtr."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kumo.testing.cloud import Cloud
from kumo.testing.fabric import Fabric, FabricHost
from kumo.testing.netns import Vm, inside
from tests.integration.helpers import until

VIP = "192.0.2.10"
MEMBERS = {"m1": "10.0.2.11", "m2": "10.0.2.12", "m3": "10.0.2.13"}
# The choice is a hash of the connection and of the member's id. With the clients' source ports fixed and these
# ids, the spread is fixed too (it is not a sample that could fall short by chance): 22/16/22 of 60, 52/27/21
# of 100 at weights 3:1:1, 25/35 of 60 over m2 and m3 alone. The bounds asserted hold with a margin.
_IDS = uuid.UUID("6b756d6f-0000-4000-8000-00000000f00d")
MEMBER_IDS = {name: str(uuid.uuid5(_IDS, f"1-{name}")) for name in MEMBERS}

MEMBER_SERVER = """
import socket, sys, threading
name, code_file = sys.argv[1], sys.argv[2]
def tcp():
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 8080)); srv.listen(128)
    while True:
        conn, _ = srv.accept()
        try:
            conn.settimeout(2)
            line = conn.makefile("rb").readline()
            if line.split(b" ")[0] in (b"GET", b"HEAD"):
                code = open(code_file).read().strip() or "200"
                conn.sendall(f"HTTP/1.1 {code} X\\r\\nContent-Length: 0\\r\\n\\r\\n".encode())
            else:
                conn.sendall(name.encode())
        except OSError:
            pass
        conn.close()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 5353))
    while True:
        _, source = s.recvfrom(512)
        s.sendto(name.encode(), source)
threading.Thread(target=udp, daemon=True).start()
tcp()
"""

CONNECT = """
import json, socket, sys
vip, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
got, failed = [], 0
for sport in range(first, first + count):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.settimeout(3)
    try:
        s.bind(("0.0.0.0", sport)); s.connect((vip, 80)); s.sendall(b"hello\\n")
        got.append(s.recv(16).decode())
    except OSError:
        failed += 1
    finally:
        s.close()
print(json.dumps({"members": got, "failed": failed}))
"""

QUERIES = """
import json, socket, sys
vip, count, sources = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = []
for i in range(sources):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 45000 + i)); s.settimeout(2)
    socks.append(s)
answers, unanswered = [], 0
for n in range(count):
    s = socks[n % sources]
    s.sendto(b"query", (vip, 53))
    try:
        data, (src, sport) = s.recvfrom(64)
        answers.append([data.decode(), src, sport])
    except OSError:
        unanswered += 1
print(json.dumps({"answers": answers, "unanswered": unanswered}))
"""


class Backends:
    """The member VMs and their servers (stopped and started by name)."""

    def __init__(self, cloud: Cloud, workdir: Path) -> None:
        self.cloud = cloud
        self.workdir = workdir
        self.vms: dict[str, Vm] = {}
        self.servers: dict[str, subprocess.Popen[str]] = {}
        for name, address in MEMBERS.items():
            self.vms[name] = cloud.attach(name, "db", f"{address}/24", "10.0.2.1")
            self.code(name, 200)
            self.start(name)

    def code(self, name: str, code: int) -> None:
        (self.workdir / f"{name}.code").write_text(str(code))

    def start(self, name: str) -> None:
        code_file = str(self.workdir / f"{name}.code")
        self.servers[name] = self.vms[name].popen(sys.executable, "-c", MEMBER_SERVER, name, code_file)

    def stop(self, name: str) -> None:
        server = self.servers.pop(name)
        server.kill()
        server.wait()

    def close(self) -> None:
        for name in list(self.servers):
            self.stop(name)


@pytest.fixture
def lb(cloud: Cloud, tmp_path: Path) -> Iterator[tuple[Cloud, Backends]]:
    client = cloud.attach("c1", "web", "10.0.1.11/24", "10.0.1.1")
    backends = Backends(cloud, tmp_path)
    try:
        time.sleep(0.5)
        for address in MEMBERS.values():
            assert until(lambda a=address: client.ping(a, wait=0.5), 10.0), address
        yield cloud, backends
    finally:
        backends.close()


def make_pool(cloud: Cloud, protocol: str = "tcp", weights: dict[str, int] | None = None, **pool: object) -> str:
    api = cloud.api
    balancer = api.collection("load_balancers").create(router_id=cloud.ids["rtr"])["id"]
    pool_id: str = api.collection("pools").create(load_balancer_id=balancer, protocol=protocol, **pool)["id"]
    port = 5353 if protocol == "udp" else 8080
    for name, address in MEMBERS.items():
        weight = (weights or {}).get(name, 1)
        member = api.collection("pool_members").create(
            id=MEMBER_IDS[name], pool_id=pool_id, address=address, protocol_port=port, weight=weight
        )
        cloud.ids[name + "-member"] = member["id"]
    api.collection("vips").create(pool_id=pool_id, address=VIP, protocol_port=53 if protocol == "udp" else 80)
    return pool_id


def connect(cloud: Cloud, first: int, count: int) -> tuple[collections.Counter[str], int]:
    done = cloud.vms["c1"].run(sys.executable, "-c", CONNECT, VIP, str(first), str(count), timeout=count * 3 + 30)
    result = json.loads(done.stdout)
    return collections.Counter(result["members"]), int(result["failed"])


def test_connections_spread_follow_weights_drain_and_persist(lb: tuple[Cloud, Backends]) -> None:
    cloud, _ = lb
    pool = make_pool(cloud)
    spread, failed = connect(cloud, 40000, 60)
    assert failed == 0 and set(spread) == set(MEMBERS) and min(spread.values()) >= 10, spread
    # the pool's statistics: every connection counted for its member, with its bytes both ways
    by_id = {cloud.ids[name + "-member"]: name for name in MEMBERS}

    def counted() -> dict[str, dict[str, int]]:
        return {by_id[m["member_id"]]: m for m in cloud.api.pool_stats(pool)["members"]}

    assert until(lambda: {n: m["total_connections"] for n, m in counted().items()} == dict(spread), 10.0), counted()
    for name, member in counted().items():
        assert member["active_connections"] == spread[name], member  # (their flows are still installed)
        assert member["bytes_in"] >= spread[name] * 60 and member["bytes_out"] >= spread[name] * 40, member
    # weights 3:1:1 (tolerance: m1 gets 45-75 % of 100 connections; the choice is a hash, not a counter)
    cloud.api.collection("pool_members").update(cloud.ids["m1-member"], weight=3)
    weighted, failed = connect(cloud, 40100, 100)
    assert failed == 0 and 45 <= weighted["m1"] <= 75 and weighted["m2"] > 0 and weighted["m3"] > 0, weighted
    # weight 0: drained, no new connection
    cloud.api.collection("pool_members").update(cloud.ids["m2-member"], weight=0)
    drained, failed = connect(cloud, 40200, 60)
    assert failed == 0 and drained["m2"] == 0, drained
    # source_ip persistence: one client, one member
    cloud.api.collection("pools").update(pool, lb_method="source_ip")
    persistent, failed = connect(cloud, 40300, 20)
    assert failed == 0 and len(persistent) == 1, persistent


def test_a_udp_vip_spreads_queries_and_every_answer_comes_from_the_vip(lb: tuple[Cloud, Backends]) -> None:
    cloud, _ = lb
    make_pool(cloud, protocol="udp")
    done = cloud.vms["c1"].run(sys.executable, "-c", QUERIES, VIP, "100", "20", timeout=120)
    result = json.loads(done.stdout)
    assert result["unanswered"] == 0, result
    members = collections.Counter(name for name, _, _ in result["answers"])
    assert set(members) == set(MEMBERS), members
    assert {(src, sport) for _, src, sport in result["answers"]} == {(VIP, 53)}


def member_status(cloud: Cloud, name: str) -> tuple[str, str | None]:
    member = cloud.api.collection("pool_members").get(cloud.ids[name + "-member"])
    return member["status"], member["status_detail"]


def all_checked_up(cloud: Cloud) -> bool:
    return all(member_status(cloud, name) == ("up", "connection accepted") for name in MEMBERS)


def test_a_tcp_monitor_takes_a_dead_member_out_and_back(lb: tuple[Cloud, Backends]) -> None:
    cloud, backends = lb
    monitor = cloud.api.collection("health_monitors").create(type="tcp", delay=1, timeout=1, max_retries=2)["id"]
    make_pool(cloud, health_monitor_id=monitor)
    assert until(lambda: all_checked_up(cloud), 10.0), [member_status(cloud, n) for n in MEMBERS]
    backends.stop("m2")
    assert until(lambda: member_status(cloud, "m2")[0] == "down", 10.0), member_status(cloud, "m2")
    assert member_status(cloud, "m2")[1] == "connection refused"
    spread, failed = connect(cloud, 41000, 60)
    assert failed == 0 and spread["m2"] == 0 and spread["m1"] > 0 and spread["m3"] > 0, (spread, failed)
    backends.start("m2")
    assert until(lambda: member_status(cloud, "m2") == ("up", "connection accepted"), 10.0), member_status(cloud, "m2")
    spread, failed = connect(cloud, 41100, 60)
    assert failed == 0 and spread["m2"] >= 10, spread
    # a stop (SIGTERM, as systemd sends) takes the checker's namespace away with the agent
    checker = f"kumo-lbc-{cloud.ids['rtr'][:8]}"
    assert checker in namespaces()
    assert cloud.host.stop_kumo() == 0
    assert checker not in namespaces()
    assert not (cloud.host.state_dir / "agent.sock").exists()


def namespaces() -> list[str]:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()


def test_an_http_monitor_follows_the_status_code(lb: tuple[Cloud, Backends]) -> None:
    cloud, backends = lb
    monitor = cloud.api.collection("health_monitors").create(
        type="http", delay=1, timeout=1, max_retries=2, url_path="/health", expected_codes="200-204"
    )["id"]
    make_pool(cloud, health_monitor_id=monitor)
    assert until(lambda: all(member_status(cloud, n) == ("up", "HTTP 200") for n in MEMBERS), 10.0)
    backends.code("m3", 500)
    assert until(lambda: member_status(cloud, "m3") == ("down", "HTTP 500, expected 200-204"), 10.0), member_status(
        cloud, "m3"
    )
    spread, failed = connect(cloud, 42000, 60)
    assert failed == 0 and spread["m3"] == 0, spread
    backends.code("m3", 204)
    assert until(lambda: member_status(cloud, "m3") == ("up", "HTTP 204"), 10.0), member_status(cloud, "m3")
    spread, failed = connect(cloud, 42100, 60)
    assert failed == 0 and spread["m3"] >= 10, spread


def checking_hosts(fabric: Fabric, router_id: str) -> list[FabricHost]:
    return [h for h in fabric.hosts if h.agent is not None and h.agent.proc is not None and router_id in _checking(h)]


def _checking(host: FabricHost) -> list[str]:
    try:
        return list(host.agent_stats()["health_checks"]["checking_routers"])
    except Exception:  # (an agent being killed)
        return []


def test_another_agent_takes_the_checks_over_when_the_checking_one_dies(tmp_path: Path) -> None:
    with Fabric(tmp_path, hosts=3) as fabric, inside(fabric.netns):
        api = fabric.client()
        bridges = {name: api.collection("bridges").create(name=name)["id"] for name in ("web", "db")}
        router = api.collection("routers").create(name="rtr")["id"]
        for bridge, third in (("web", 1), ("db", 2)):
            rp = api.collection("ports").create(
                device_id=router, port_address=f"10.0.{third}.1", network_cidr=f"10.0.{third}.0/24"
            )
            bp = api.collection("ports").create(device_id=bridges[bridge])
            api.link_ports(bp["id"], rp["id"])
        vms: dict[str, tuple[Vm, FabricHost]] = {}
        for name, address, bridge, host in (
            ("c1", "10.0.1.11", "web", fabric.hosts[0]),
            ("m2", MEMBERS["m2"], "db", fabric.hosts[1]),
            ("m3", MEMBERS["m3"], "db", fabric.hosts[2]),
        ):
            vm = host.vm(name)
            vm.address(f"{address}/24", address.rsplit(".", 1)[0] + ".1")
            port = api.collection("ports").create(device_id=bridges[bridge], name=name)
            api.bind_port(port["id"], host.host_id, vm.interface)
            vms[name] = (vm, host)
        for name in ("m2", "m3"):
            (tmp_path / f"{name}.code").write_text("200")
        codes = {n: str(tmp_path / f"{n}.code") for n in ("m2", "m3")}
        servers = {n: vms[n][0].popen(sys.executable, "-c", MEMBER_SERVER, n, codes[n]) for n in codes}
        killed: FabricHost | None = None
        try:
            monitor = api.collection("health_monitors").create(type="tcp", delay=1, timeout=1, max_retries=2)["id"]
            balancer = api.collection("load_balancers").create(router_id=router)["id"]
            pool = api.collection("pools").create(load_balancer_id=balancer, health_monitor_id=monitor)["id"]
            members = {
                n: api.collection("pool_members").create(
                    id=MEMBER_IDS[n], pool_id=pool, address=MEMBERS[n], protocol_port=8080
                )["id"]
                for n in ("m2", "m3")
            }
            api.collection("vips").create(pool_id=pool, address=VIP, protocol_port=80)

            def status(name: str) -> tuple[str, str | None]:
                member = api.collection("pool_members").get(members[name])
                return member["status"], member["status_detail"]

            assert until(lambda: all(status(n) == ("up", "connection accepted") for n in members), 15.0)
            # connections from host 1 spread over the members on hosts 2 and 3; the statistics add up the hosts'
            done = vms["c1"][0].run(sys.executable, "-c", CONNECT, VIP, "40000", "60", timeout=240)
            result = json.loads(done.stdout)
            spread = collections.Counter(result["members"])
            assert result["failed"] == 0 and min(spread[n] for n in members) >= 10, result

            def stats() -> dict[str, dict[str, int]]:
                by_id = {member_id: name for name, member_id in members.items()}
                return {by_id[m["member_id"]]: m for m in api.pool_stats(pool)["members"]}

            def counted() -> bool:
                found = stats()
                totals = {n: m["total_connections"] for n, m in found.items()}
                return totals == dict(spread) and all(m["bytes_out"] > 0 for m in found.values())  # (members' hosts)

            assert until(counted, 15.0), stats()
            checkers = checking_hosts(fabric, router)
            assert len(checkers) == 1, [h.host_id for h in checkers]  # exactly one agent checks
            dead = killed = checkers[0]
            dead.kill_agent()
            alive = next(n for n in members if vms[n][1] is not dead)  # a member whose host still has its agent
            # the claim goes with the dead agent's ZooKeeper session (10 s); another agent takes it
            assert until(lambda: len(checking_hosts(fabric, router)) == 1, 20.0)
            assert checking_hosts(fabric, router)[0] is not dead
            servers.pop(alive).kill()
            assert until(lambda: status(alive) == ("down", "connection refused"), 10.0), status(alive)
            servers[alive] = vms[alive][0].popen(sys.executable, "-c", MEMBER_SERVER, alive, codes[alive])
            assert until(lambda: status(alive) == ("up", "connection accepted"), 10.0), status(alive)
        finally:
            for server in servers.values():
                server.kill()
                server.wait()
            if killed is not None:
                killed.start_agent()  # (a restarted agent removes the checker namespace the killed one left)


NOT_HTTP = """
import socket
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(("0.0.0.0", 9090))
srv.listen(16)
while True:
    conn, _ = srv.accept(); conn.sendall(b"SSH-2.0-not-http\\r\\n"); conn.close()
"""

SILENT = """
import socket, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(("0.0.0.0", 9091))
srv.listen(16)
held = []
while True:
    conn, _ = srv.accept(); held.append(conn)  # accepted, never answered
"""


def test_bad_members_get_a_clear_status_and_the_checks_stay_bounded(lb: tuple[Cloud, Backends]) -> None:
    cloud, backends = lb
    api = cloud.api
    servers = [backends.vms[vm].popen(sys.executable, "-c", code) for vm, code in (("m2", NOT_HTTP), ("m3", SILENT))]
    try:
        monitor = api.collection("health_monitors").create(type="http", delay=1, timeout=1, max_retries=2)["id"]
        balancer = api.collection("load_balancers").create(router_id=cloud.ids["rtr"])["id"]
        pool = api.collection("pools").create(load_balancer_id=balancer, health_monitor_id=monitor)["id"]
        members = {
            "good": (MEMBERS["m1"], 8080),
            "not_http": (MEMBERS["m2"], 9090),
            "silent": (MEMBERS["m3"], 9091),
            "nowhere": ("10.9.9.9", 8080),  # outside every network of the router
        }
        ids = {
            name: api.collection("pool_members").create(pool_id=pool, address=a, protocol_port=p)["id"]
            for name, (a, p) in members.items()
        }
        api.collection("vips").create(pool_id=pool, address=VIP, protocol_port=80)

        def statuses() -> dict[str, tuple[str, str | None]]:
            got = {m["id"]: (m["status"], m["status_detail"]) for m in api.collection("pool_members").list()}
            return {name: got[i] for name, i in ids.items()}

        expected_down = ("not_http", "silent", "nowhere")
        assert until(lambda: all(statuses()[n][0] == "down" for n in expected_down), 15.0), statuses()
        found = statuses()
        assert found["good"] == ("up", "HTTP 200"), found
        assert found["not_http"] == ("down", "not an HTTP answer: 'SSH-2.0-not-http'"), found
        assert found["silent"] == ("down", "no answer within 1 s"), found
        assert found["nowhere"][1] in ("no answer within 1 s", "No route to host", "Network is unreachable"), found
        # at most one check per member per delay (1 s): 4 members over 5 s
        before = cloud.host.agent_stats()["agent"].get("lb_checks", 0)
        time.sleep(5.0)
        checks = cloud.host.agent_stats()["agent"].get("lb_checks", 0) - before
        assert 4 * 4 <= checks <= 4 * 6, checks
        assert cloud.host.agent_stats()["agent"].get("lb_checker_failures", 0) == 0
    finally:
        for server in servers:
            server.kill()
            server.wait()
