"""Runs the golden walks of golden/*.toml against the simulator (by case name)."""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path
from typing import Any

import pytest

from kumo.packet import ip_to_int
from tests.unit.simulation.conftest import (
    VM1_MAC,
    VM2_MAC,
    VM3_MAC,
    Cloud,
    arp_request,
    ping_frame,
    tcp_frame,
    udp_frame,
)

CASES = [
    case
    for path in sorted((Path(__file__).parent / "golden").glob("*.toml"))
    for case in tomllib.loads(path.read_text())["case"]
]
VM_MACS = {"vm1": VM1_MAC, "vm2": VM2_MAC, "vm3": VM3_MAC}


def mac(cloud: Cloud, name: str) -> str:
    if name in VM_MACS:
        return VM_MACS[name]
    if name.startswith("router:"):
        return str(cloud.obj("ports", name.split(":", 1)[1])["port_mac"])
    return name


def frame(cloud: Cloud, case: dict[str, Any]) -> bytes:
    if "arp" in case:
        arp = case["arp"]
        return arp_request(mac(cloud, arp["sender"]), arp["spa"], arp["tpa"])
    p = case["packet"]
    src, dst = mac(cloud, p["eth_src"]), mac(cloud, p["eth_dst"])
    if p["proto"] == "tcp":
        return tcp_frame(src, dst, p["ip_src"], p["ip_dst"], p["src_port"], p["dst_port"], ttl=p.get("ttl", 64))
    if p["proto"] == "udp":
        return udp_frame(src, dst, p["ip_src"], p["ip_dst"], p["src_port"], p["dst_port"], ttl=p.get("ttl", 64))
    return ping_frame(src, dst, p["ip_src"], p["ip_dst"], ttl=p.get("ttl", 64))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden_walk(cloud: Cloud, case: dict[str, Any]) -> None:
    for bridge, who, port in case.get("learned_macs", []):
        cloud.learned.macs[(cloud[bridge], mac(cloud, who), None)] = cloud[port]
    for ip, who in case.get("learned_arps", []):
        cloud.learned.arps[(cloud["rtr"], ip_to_int(ip))] = mac(cloud, who)
    result = cloud.send(case["port"], frame(cloud, case), apply=False)
    expect = case["expect"]
    assert (result.verdict.value, result.reason.value) == (expect["action"], expect["reason"]), result.trace
    if "egress" in expect:
        assert cloud.names(result.egress_port_ids) == expect["egress"]
    if "stages" in expect:
        stages = [stage for stage, _ in itertools.groupby(s.stage for s in result.trace)]
        assert stages == expect["stages"]
    if "match_fields" in expect:
        assert sorted(result.match.fields()) == expect["match_fields"]
    if "rewrites" in expect:
        assert result.rewrites == {k: mac(cloud, v) for k, v in expect["rewrites"].items()}
    if "ttl_decrement" in expect:
        assert result.ttl_decrement == expect["ttl_decrement"]
    if "generated" in expect:
        assert [g.what for g in result.generated] == expect["generated"]
