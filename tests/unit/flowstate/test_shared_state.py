"""Shared flow state: a real Redis on loopback, SNAT blocks leased from a real store, the push format."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from kumo.agent.push import PushRefused, ReplayGuard, decode, encode
from kumo.agent.pushkey import CLUSTER_KEYS, PUSH_KEY, ClusterKey
from kumo.flowstate.local import LocalFlowState
from kumo.flowstate.redis import FlowStateUnavailable, RedisFlowState
from kumo.flowstate.snat_blocks import SNAT_BLOCKS, SnatBlocks
from kumo.packet import ip_to_int
from kumo.simulation.result import StateWrite
from kumo.simulation.view import NatTarget
from kumo.testing.redis import RedisServer
from kumo.topology.store.sqlite import SqliteStore

EXT = ip_to_int("192.0.2.10")
DST = ip_to_int("198.51.100.7")


def test_state_written_on_one_host_is_found_from_another(redis_server: RedisServer) -> None:
    ingress, elsewhere = RedisFlowState(redis_server.url), RedisFlowState(redis_server.url)
    ct = (6, 1, 2, 3, 4, "router-1")
    nat = ("snat", "router-1", 6, DST, 80, EXT, 20001)
    ingress.record("conntrack", ct)
    ingress.record("nat", nat, (ip_to_int("10.0.1.11"), 40000))
    assert not elsewhere.conntrack_has(ct)  # not durable before the round's flush
    ingress.flush()
    assert elsewhere.conntrack_has(ct)
    assert elsewhere.nat_get(nat) == (ip_to_int("10.0.1.11"), 40000)
    assert elsewhere.counters["flow_state_redis_hits"] == 2
    assert elsewhere.nat_get(nat) is not None and elsewhere.counters["flow_state_redis_lookups"] == 3  # cached
    assert ingress.client.pttl("kumo:fs:conntrack:" + '[6,1,2,3,4,"router-1"]') > 50_000  # expires when idle


def test_redis_down_fails_closed_fast_and_recovers() -> None:
    with RedisServer() as server:
        state = RedisFlowState(server.url)
        server.stop()
        state.record("conntrack", (6, 9, 9, 9, 9, "r"))
        with pytest.raises(FlowStateUnavailable):
            state.flush()
        started = time.monotonic()
        assert not state.conntrack_has((6, 8, 8, 8, 8, "r"))  # within the back-off: no call at all
        assert time.monotonic() - started < 0.05
        assert state.counters["flow_state_lookup_skipped"] == 1
        server.start()
        time.sleep(1.1)  # the back-off ends
        state.record("conntrack", (6, 9, 9, 9, 9, "r"))
        state.flush()
        assert RedisFlowState(server.url).conntrack_has((6, 9, 9, 9, 9, "r"))


def test_two_hosts_never_hand_out_the_same_port_towards_one_destination(tmp_path: object) -> None:
    store = SqliteStore(":memory:")
    try:
        hosts = []
        for name in ("h1", "h2"):
            session = store.open_session()
            hosts.append(SnatBlocks(store, lambda s=session: s, name, LocalFlowState(), block_ports=64))
        target = [NatTarget(EXT, EXT, 20000, 20999)]
        given = set()
        for sport in range(1000, 1300):  # 300 flows per host, to one destination: several blocks each
            for blocks in hosts:
                chosen = blocks.allocate("r1", target, (17, DST, 53, ip_to_int("10.0.1.11"), sport))
                assert chosen is not None
                assert chosen not in given
                given.add(chosen)
        leases = store.state_list(SNAT_BLOCKS)
        assert {v["host_id"] for v in leases.values()} == {"h1", "h2"}
        assert len(leases) == sum(len(b) for h in hosts for b in h.held.values())
        # a binding read back from the shared store (agent restart) holds its block again
        session = store.open_session()
        again = SnatBlocks(store, lambda: session, "h3", LocalFlowState(), block_ports=64)
        ip, port = next(iter(given))
        again.adopt("r1", ip, port)
        assert again.counters["snat_block_adopt_conflicts"] == 1  # h1 or h2 holds it: not taken from them
    finally:
        store.close()


def test_an_idle_block_is_released_once_its_ports_are_free() -> None:
    store = SqliteStore(":memory:")
    try:
        session = store.open_session()
        local = LocalFlowState(ttl=0.2)
        blocks = SnatBlocks(store, lambda: session, "h1", local, block_ports=16)
        chosen = blocks.allocate("r1", [NatTarget(EXT, EXT, 20000, 20063)], (17, DST, 53, 1, 1))
        assert chosen is not None and len(store.state_list(SNAT_BLOCKS)) == 1
        assert blocks.idle_blocks(0.0) == []  # its port is reserved
        time.sleep(0.25)
        idle = blocks.idle_blocks(0.0)
        assert len(idle) == 1
        blocks.release(*idle[0])
        assert store.state_list(SNAT_BLOCKS) == {}
    finally:
        store.close()


KEY = bytes(range(32))


def test_a_push_carries_keys_and_values_back_as_tuples() -> None:
    writes = [StateWrite("conntrack", (6, 1, 2, 3, 4, "d")), StateWrite("nat", ("snat", "r", 6, 1, 2, 3, 4), (5, 6))]
    pushed = decode(encode("host-1", writes, KEY, seq=7), KEY)
    assert (pushed.host, pushed.seq, pushed.writes) == ("host-1", 7, writes)
    with pytest.raises(PushRefused, match="wrong MAC"):
        decode(b'{"host": "x"}', KEY)


def test_a_push_under_another_key_or_altered_is_refused() -> None:
    datagram = encode("host-1", [StateWrite("conntrack", (6, 1, 2, 3, 4, "d"))], KEY)
    for forged, key in ((datagram, bytes(32)), (datagram.replace(b'"d"', b'"e"'), KEY), (datagram[:-1], KEY)):
        with pytest.raises(PushRefused) as refused:
            decode(forged, key)
        assert refused.value.reason == "bad_mac"


def test_a_push_is_taken_once_and_only_while_fresh() -> None:
    guard = ReplayGuard(window_s=30)
    now = int(time.time() * 1000)
    first = decode(encode("host-1", [], KEY, seq=1, ts=now), KEY)
    guard.check(first, now)
    with pytest.raises(PushRefused) as replayed:
        guard.check(first, now + 5)
    assert replayed.value.reason == "replayed"
    guard.check(decode(encode("host-1", [], KEY, seq=2, ts=now), KEY), now)  # (the next one, same ms)
    guard.check(decode(encode("host-2", [], KEY, seq=1, ts=now), KEY), now)  # (another sender's)
    for ts in (now - 31_000, now + 31_000):
        with pytest.raises(PushRefused) as stale:
            guard.check(decode(encode("host-1", [], KEY, seq=3, ts=ts), KEY), now)
        assert stale.value.reason == "stale"


def test_expired_entries_are_dropped_unless_recorded_again_meanwhile() -> None:
    state = LocalFlowState(ttl=0.05)
    fwd = ("snat-fwd", "r1", 17, 1, 1000, DST, 53)
    state.record("conntrack", (17, 1, 1000, DST, 53, "b"))
    state.record("nat", fwd, (EXT, 20001))
    time.sleep(0.1)
    expired = state.expired_keys()
    assert sorted(table for table, _ in expired) == ["conntrack", "nat", "snat_used"]
    state.record("conntrack", (17, 1, 1000, DST, 53, "b"))  # in use again before the drop
    assert state.drop_expired(expired) == 2
    assert state.conntrack_has((17, 1, 1000, DST, 53, "b"))
    assert state.nat == {} and state.snat_used == {}


def test_every_agent_follows_one_cluster_push_key_and_its_rotation(tmp_path: object) -> None:
    store = SqliteStore(":memory:")
    try:
        first, second = ClusterKey(store), ClusterKey(store)
        first.open()
        second.open()
        assert len(first.key) == 32 and first.key == second.key
        old = first.key
        store.state_delete(CLUSTER_KEYS, PUSH_KEY)  # an operator rotates it
        assert _until(lambda: first.key != old and first.key == second.key)
        first.close()
        second.close()
    finally:
        store.close()


def _until(probe: Any, within: float = 5.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if probe():
            return True
        time.sleep(0.02)
    return False


def test_redis_with_a_password_needs_it_and_never_shows_it() -> None:
    with RedisServer(password="s3cret-pw") as server:
        good = RedisFlowState(server.url)
        good.record("conntrack", (6, 1, 2, 3, 4, "r"))
        good.flush()
        assert RedisFlowState(server.url).conntrack_has((6, 1, 2, 3, 4, "r"))
        bad = RedisFlowState(server.url.replace("s3cret-pw", "wrong"))
        bad.record("conntrack", (6, 1, 2, 3, 4, "r"))
        with pytest.raises(FlowStateUnavailable) as refused:
            bad.flush()
        assert "wrong" not in str(refused.value) and "s3cret" not in str(refused.value)
        assert ":***@" in str(refused.value)


def test_redis_over_tls_is_verified(tmp_path: Path) -> None:
    cert, key = tmp_path / "redis.pem", tmp_path / "redis.key"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=redis"]
    san = ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run([*openssl, *san, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    with RedisServer(password="pw", tls=(cert, key)) as server:
        assert server.url.startswith("rediss://")
        state = RedisFlowState(server.url)
        state.record("conntrack", (6, 1, 2, 3, 4, "r"))
        state.flush()
        assert RedisFlowState(server.url).conntrack_has((6, 1, 2, 3, 4, "r"))
        # a client that does not trust the server's certificate does not talk to it
        untrusting = RedisFlowState(server.url.split("?")[0])
        untrusting.record("conntrack", (6, 1, 2, 3, 5, "r"))
        with pytest.raises(FlowStateUnavailable, match="certificate"):
            untrusting.flush()
