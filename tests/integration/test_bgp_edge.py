"""The BGP edge, end to end (issue 20): three hosts on a real ZooKeeper, a router with a VM on host 1 and
two uplinks on hosts 2 and 3, each peering over eBGP with a real BIRD 2 (kumo.testing.bgp). Kumo's speaker
is ExaBGP, a child of each uplink host's agent. Every test leaves the topology as it found it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from kumo.testing.bgp import (
    EXT_HOST,
    EXTERNAL,
    ROUTER_ASN,
    UPLINKS,
    VM_NETWORK,
    BgpEdge,
    build_bgp_edge,
    capture_syns,
    serve_tcp,
    source_ports,
    tcp_flows,
)
from kumo.testing.bird import peer_config
from kumo.testing.fabric import Fabric
from kumo.testing.netns import inside

pytestmark = pytest.mark.timeout(600)

HOLD_TIME = 3
PASSWORD = "s3cret"  # uplink b's session is MD5-signed, a's is not
FLOWS = 32


def within(probe: Callable[[], bool], seconds: float, step: float = 0.02) -> float | None:
    """How long `probe` took to hold (polled every `step`), or None if it did not within `seconds`."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if probe():
            return time.monotonic() - start
        time.sleep(step)
    return None


def established(edge: BgpEdge, *names: str) -> bool:
    return all(edge.peer(n)["state"] == "established" for n in names or edge.peers)


def learned_via(edge: BgpEdge) -> set[str]:
    """The uplinks (by name) the router holds a learned route to the external LAN through."""
    by_port = {port: name for name, port in edge.uplinks.items()}
    return {by_port[r["next_hop_port_id"]] for r in edge.routes(EXTERNAL) if r.get("learned")}


def whole(edge: BgpEdge) -> bool:
    return established(edge) and learned_via(edge) == {"a", "b"}


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BgpEdge]:
    workdir = tmp_path_factory.mktemp("bgp")
    with Fabric(workdir, hosts=3) as fabric, inside(fabric.netns):
        out = build_bgp_edge(fabric, workdir, hold_time=HOLD_TIME, passwords={"b": PASSWORD})
        try:
            assert within(lambda: whole(out), 30), (out.peer("a"), out.peer("b"))
            yield out
        finally:
            out.stop()


@pytest.fixture
def intact(edge: BgpEdge) -> Iterator[BgpEdge]:
    """The edge whole before the test, and again after it (or the next test says why it is not)."""
    assert within(lambda: whole(edge), 30), (edge.peer("a"), edge.peer("b"))
    yield edge
    assert within(lambda: whole(edge), 30), (edge.peer("a"), edge.peer("b"))


def counters(edge: BgpEdge, index: int) -> dict[str, object]:
    """A host's drop and flow counters, for a failure's message."""
    stats = edge.fabric.hosts[index].agent_stats()
    wanted = ("drop", "flows", "upcall", "arp", "park")
    return {k: v for k, v in {**stats["agent"], **stats["datapath"]}.items() if any(w in k for w in wanted)}


def spread(edge: BgpEdge, first_sport: int) -> dict[str, set[int]]:
    """FLOWS TCP connections from the VM to the external host: the source ports seen on each uplink."""
    server = serve_tcp(edge.ext, 8080, 30)
    captures = {name: capture_syns(e, 8080, 8) for name, e in edge.edges.items()}
    try:
        time.sleep(1.0)  # tcpdump listening
        assert tcp_flows(edge.vm1, EXT_HOST, 8080, first_sport, FLOWS) == FLOWS
    finally:
        server.kill()
    return {name: source_ports(c) for name, c in captures.items()}


def test_sessions_establish_and_each_side_learns_the_others_networks(intact: BgpEdge) -> None:
    edge = intact
    h2, h3 = edge.fabric.hosts[1:]
    for name, host in (("a", h2), ("b", h3)):
        peer = edge.peer(name)
        assert peer["host_id"] == host.host_id
        assert peer["prefixes_received"] == 1 and peer["prefixes_advertised"] == 1, peer
        assert peer["uptime_s"] is not None and peer["uptime_s"] >= 0
        assert peer["password"] in (None, "********")
        # the BIRD holds the VM network through its uplink's address
        routes = edge.birds[name].routes()
        assert VM_NETWORK in routes and f"via {UPLINKS[name][1]}" in routes, routes
    learned = edge.routes(EXTERNAL)
    assert len(learned) == 2 and all(r["learned"] for r in learned), learned
    assert {r["next_hop_gateway"] for r in learned} == {UPLINKS["a"][2], UPLINKS["b"][2]}
    cli = [sys.executable, "-m", "kumo.cli.main", "bgp-peer", "list", "--api", "http://127.0.0.1:8181"]
    listed = subprocess.run([*cli, "--router", edge.router_id], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("established") == 2, listed.stdout


def test_the_vm_reaches_the_external_host_and_flows_spread_over_both_uplinks(intact: BgpEdge) -> None:
    edge = intact
    assert edge.vm1.ping(EXT_HOST, count=3)
    seen = spread(edge, 41000)
    assert seen["a"] and seen["b"], seen
    assert not seen["a"] & seen["b"] and len(seen["a"] | seen["b"]) == FLOWS, seen


def test_a_peer_that_stops_is_withdrawn_within_a_second_and_only_its_flows_move(intact: BgpEdge) -> None:
    edge = intact
    before = spread(edge, 42000)
    edge.birds["a"].stop()  # graceful: a Cease NOTIFICATION
    took = within(lambda: learned_via(edge) == {"b"}, 5)
    assert took is not None and took < 1.0, took
    assert edge.peer("a")["state"] != "established"
    during = spread(edge, 42000)
    assert during["a"] == set() and during["b"] == before["a"] | before["b"], during
    edge.birds["a"].start()
    assert within(lambda: whole(edge), 30)
    after = spread(edge, 42000)
    assert after == before  # consistent hashing: the flows that left uplink a came back, the others never moved


def test_a_silent_link_is_withdrawn_within_the_hold_time_and_a_second(intact: BgpEdge) -> None:
    edge = intact
    bird_a = edge.edges["a"]
    bird_a.run("ip", "route", "add", "blackhole", f"{UPLINKS['a'][1]}/32", check=True)  # BIRD's packets vanish
    try:
        took = within(lambda: learned_via(edge) == {"b"}, HOLD_TIME + 5)
        assert took is not None and took < HOLD_TIME + 1.0, took
        assert "hold" in (edge.peer("a")["last_error"] or "").lower() or edge.peer("a")["state"] != "established"
        assert edge.vm1.ping(EXT_HOST, count=2)
    finally:
        bird_a.run("ip", "route", "del", "blackhole", f"{UPLINKS['a'][1]}/32")


def test_md5_a_wrong_password_never_establishes_and_the_state_says_why(intact: BgpEdge) -> None:
    edge = intact
    peer_b = edge.peers["b"]
    assert edge.peer("b")["state"] == "established"  # a matching password (BIRD b signs with it too)
    edge.api.bgp_peers.update(peer_b, password="wrong")
    try:
        assert within(lambda: learned_via(edge) == {"a"}, 10)
        assert within(lambda: "password" in (edge.peer("b")["last_error"] or ""), 15), edge.peer("b")
        assert edge.peer("b")["state"] in ("connect", "active"), edge.peer("b")
        assert edge.birds["b"].state("kumo") != "Established"
        assert edge.peer("a")["state"] == "established" and edge.vm1.ping(EXT_HOST, count=2)
    finally:
        edge.api.bgp_peers.update(peer_b, password=PASSWORD)


def test_a_wrong_as_number_is_refused_with_a_named_reason(intact: BgpEdge) -> None:
    edge = intact
    peer_a = edge.peers["a"]
    edge.api.bgp_peers.update(peer_a, asn=65009)
    try:
        assert within(lambda: "AS" in (edge.peer("a")["last_error"] or ""), 15), edge.peer("a")
        assert edge.peer("a")["state"] != "established"
        assert learned_via(edge) == {"b"} and edge.vm1.ping(EXT_HOST, count=2)
    finally:
        edge.api.bgp_peers.update(peer_a, asn=UPLINKS["a"][3])


def test_a_peer_that_floods_prefixes_is_stopped_at_its_limit(intact: BgpEdge) -> None:
    edge = intact
    bird = edge.birds["a"]
    _, address, peer_address, peer_asn, _ = UPLINKS["a"]
    edge.api.bgp_peers.update(edge.peers["a"], max_prefixes=20)
    assert within(lambda: whole(edge), 30)
    flood = peer_config(peer_address, peer_asn, address, ROUTER_ASN, hold_time=HOLD_TIME, extra_prefixes=50)
    bird.reconfigure(flood)
    try:
        assert within(lambda: edge.peer("a")["state"] == "max_prefix", 10), edge.peer("a")
        assert "limit of 20" in edge.peer("a")["last_error"]
        assert learned_via(edge) == {"b"} and not [r for r in edge.routes() if r["dst_cidr"].startswith("100.64.")]
        assert edge.fabric.hosts[1].agent_stats()["agent"]["bgp_max_prefix_stops"] >= 1
        assert edge.peer("b")["state"] == "established" and edge.vm1.ping(EXT_HOST, count=2)
    finally:
        bird.reconfigure(peer_config(peer_address, peer_asn, address, ROUTER_ASN, hold_time=HOLD_TIME))
        edge.api.bgp_peers.update(edge.peers["a"], max_prefixes=10_000)  # a change clears the hold


def test_killing_the_uplink_agent_drops_its_session_and_traffic_goes_on(intact: BgpEdge) -> None:
    edge = intact
    h2 = edge.fabric.hosts[1]
    h2.kill_agent()  # SIGKILL: ExaBGP's helper sees the agent's socket close and stops it (a Cease)
    try:
        assert within(lambda: edge.birds["a"].state("kumo") != "Established", 3)
        assert edge.vm1.ping(EXT_HOST, count=2)
        assert within(lambda: learned_via(edge) == {"b"}, 30)  # the store session of host 2 timed out
        assert edge.peer("a")["state"] == "host_down"
        server = serve_tcp(edge.ext, 8080, 150)
        try:
            ok = tcp_flows(edge.vm1, EXT_HOST, 8080, 43000, FLOWS)
            if ok != FLOWS:
                pytest.fail(f"{ok} of {FLOWS}; host 1 {counters(edge, 0)}; host 3 {counters(edge, 2)}; {edge.routes()}")
        finally:
            server.kill()
    finally:
        h2.start_agent()
