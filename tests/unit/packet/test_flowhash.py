from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kumo.packet.flowhash import path_key, rendezvous, weighted_rendezvous


def assert_same_in_every_process(code: str) -> None:
    """`code` prints the same under different string-hash seeds (PYTHONHASHSEED salts str and bytes)."""
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "random")
    }
    assert len(outputs) == 1 and outputs != {""}


def test_flow_hash_is_the_same_in_every_process() -> None:
    """Agents on different hosts must pick the same ECMP path, NAT port and pool member for a flow."""
    code = "from kumo.packet.flowhash import flow_hash; print(flow_hash((6, 167772427, 1000, 167903757, 80)))"
    assert_same_in_every_process(code)


FLOWS = st.tuples(
    st.sampled_from([6, 17]),
    st.integers(0, 2**32 - 1),
    st.integers(1, 65535),
    st.integers(0, 2**32 - 1),
    st.integers(1, 65535),
)


@given(flows=st.lists(FLOWS, min_size=1, max_size=200), paths=st.integers(2, 8), gone=st.integers(0, 7))
def test_a_path_that_goes_moves_only_its_own_flows_and_they_come_back_with_it(
    flows: list[tuple[int, ...]], paths: int, gone: int
) -> None:
    keys = [path_key(f"uplink-{i}/192.0.2.{i + 1}") for i in range(paths)]
    gone %= paths
    before = [keys[rendezvous(flow, keys)] for flow in flows]
    rest = keys[:gone] + keys[gone + 1 :]
    after = [rest[rendezvous(flow, rest)] for flow in flows]
    for was, now in zip(before, after, strict=True):
        assert was == now or was == keys[gone]  # only the gone path's flows moved
    back = [keys[rendezvous(flow, keys)] for flow in flows]
    assert back == before  # and exactly they come back when it does


@pytest.mark.parametrize("paths", [2, 3, 4, 8])
def test_flows_spread_evenly_over_equal_paths(paths: int) -> None:
    """20,000 connections from one client to one server, by source port: each path gets its share within 6 %
    (hash mod N on CPython's tuple hash, or the tuple hash of (flow, path), gave some paths 2.5 times others')."""
    keys = [path_key(f"uplink-{i}/198.51.100.{i + 1}") for i in range(paths)]
    counts = [0] * paths
    for sport in range(1024, 21024):
        counts[rendezvous((6, 167772427, sport, 3325256711, 443), keys)] += 1
    assert all(abs(count * paths / 20000 - 1) < 0.06 for count in counts), counts


def test_the_path_of_a_flow_is_the_same_in_every_process() -> None:
    code = (
        "from kumo.packet.flowhash import path_key, rendezvous; "
        "keys = [path_key(f'p{i}') for i in range(4)]; "
        "print([rendezvous((6, 167772427, s, 167903757, 80), keys) for s in range(1000, 1100)])"
    )
    assert_same_in_every_process(code)


FLOWS = [(6, 0xC6336407, sport, 0xC0000214, 80) for sport in range(1024, 31024)]  # 30,000 connections
KEYS = [path_key(name) for name in ("member-a", "member-b", "member-c")]


def shares(weights: list[int]) -> list[float]:
    chosen = [weighted_rendezvous(flow, KEYS, weights) for flow in FLOWS]
    return [chosen.count(index) / len(chosen) for index in range(len(KEYS))]


def test_weighted_rendezvous_follows_the_weights() -> None:
    for weights in ([1, 1, 1], [3, 1, 1], [1, 2, 5]):
        expected = [w / sum(weights) for w in weights]
        assert all(abs(got - want) < 0.02 for got, want in zip(shares(weights), expected, strict=True)), weights
    assert shares([1, 0, 1])[1] == 0.0  # weight 0: drained
    assert weighted_rendezvous(FLOWS[0], KEYS, [0, 0, 0]) == -1


def test_weighted_rendezvous_moves_only_the_changed_members_connections() -> None:
    before = [weighted_rendezvous(flow, KEYS, [1, 1, 1]) for flow in FLOWS]
    down = [weighted_rendezvous(flow, KEYS, [1, 0, 1]) for flow in FLOWS]  # b down (or drained)
    assert all(after == was for was, after in zip(before, down, strict=True) if was != 1)
    heavier = [weighted_rendezvous(flow, KEYS, [1, 1, 3]) for flow in FLOWS]  # c re-weighted: it only gains
    assert all(after in (was, 2) for was, after in zip(before, heavier, strict=True))
