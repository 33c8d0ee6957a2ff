"""The live picture in a real browser (issue 25): headless Chromium loads /ui from a `kumo up` that requires
tokens, with the demo's topology and two VMs exchanging traffic. After the page's scripts ran, the DOM holds
one node per device and port, the ports' traffic, and the journey of a trace the page ran through its form."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from kumo.client import Client
from kumo.demo import build_sample_cloud
from kumo.testing.browser import dump_dom
from kumo.testing.netns import VirtualHost, inside
from kumo.topology.store.sqlite import SqliteStore
from kumo.topology.tokens import create_token
from tests.integration.helpers import until, wait_ping

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[VirtualHost, dict[str, str]]]:
    """`kumo up --auth`, with an admin and a reader token made in its store beforehand."""
    host = VirtualHost(tmp_path, kumo_args=("--auth",))
    host.state_dir.mkdir(parents=True)
    store = SqliteStore(host.state_dir / "kumo.db")
    try:
        tokens = {role: create_token(store, role)[1] for role in ("admin", "reader")}
    finally:
        store.close()
    try:
        host.create()
        host.start_kumo()
        with inside(host.netns):
            yield host, tokens
    finally:
        host.stop()


def classes(dom: str, css_class: str) -> int:
    return len(re.findall(rf'<g id="[^"]*" class="node [^"]*\b{css_class}\b', dom))


def test_the_page_draws_every_device_and_port_and_runs_a_trace(secured: tuple[VirtualHost, dict[str, str]]) -> None:
    host, tokens = secured
    api = Client(f"http://127.0.0.1:{host.api.port if host.api else 8181}", token=tokens["admin"])
    build_sample_cloud(api)
    ports = {p["name"]: p for p in api.ports.list()}
    vms = {}
    for name, address, mac in (
        ("web-1", "10.0.1.11/24", "02:00:00:00:01:01"),
        ("db-1", "10.0.2.20/24", "02:00:00:00:02:01"),
    ):
        vm = vms[name] = host.vm(name, mac=mac)  # (the MACs of the demo's DHCP hosts)
        vm.address(address, address.rsplit(".", 1)[0] + ".1")
        api.bind_port(ports[f"{name}-port"]["id"], host.host_id, vm.interface)
    assert wait_ping(vms["web-1"], "10.0.1.1", within=10.0)
    vms["db-1"].ping("10.0.2.1")  # (its bridge learns its MAC; the reply is its filter's to drop)
    assert not vms["web-1"].ping("10.0.2.20", count=2)  # db-1's filter drops ICMP: counted on web-1's port
    web1 = ports["web-1-port"]["id"]

    def counted() -> bool:
        stats = api.request("GET", f"/v1/ports/{web1}/stats")
        return bool(stats["rx_packets"] > 0 and stats["dropped"] >= 2 and stats["host_id"] == host.host_id)

    assert until(counted, 15.0), api.request("GET", f"/v1/ports/{web1}/stats")

    base = f"http://127.0.0.1:{host.api.port if host.api else 8181}/ui"
    trace = f"?port={web1}&src=10.0.1.11&dst=10.0.9.10&proto=tcp&dport=5432"
    dom = dump_dom(f"{base}{trace}#token={tokens['reader']}", netns=host.netns)
    devices = len(api.bridges.list()) + len(api.routers.list())
    assert classes(dom, "kumo-device") == devices == 3
    assert classes(dom, "kumo-port") == len(ports) == 8
    assert classes(dom, "kumo-host") == 1 and "alive" in dom
    assert re.search(r"rx \d+(\.\d+k)? tx \d+", dom), "the bound ports show their traffic"
    assert re.search(r"dropped \d+", dom), "and what Kumo dropped from them"
    journey = re.search(r'<div id="journey"[^>]*data-action="([a-z]+)"[^>]*>(.*?)</div>', dom, re.S)
    assert journey is not None, dom[-3000:]
    assert journey.group(1) == "output", journey.group(2)[-1000:]
    assert "router.pre_routing" in journey.group(2) and "dnat: rewrite ip_dst=10.0.2.20" in journey.group(2)
    assert "db-1-port" in journey.group(2)  # (ids shown by name)

    locked = dump_dom(base, netns=host.netns)  # no token: nothing drawn, the page asks for one
    assert classes(locked, "kumo-port") == 0
    assert re.search(r'<form id="token-form"(?![^>]*hidden)', locked) and "needs a token" in locked
