"""Waits and traffic shared by the integration tests: a ping that is answered within a time, a condition
that becomes true within a time, iperf3 runs whose every second is reported, broadcasts counted where they
arrive, and what the hosts of a fabric say when a test fails."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

from kumo.client import Client
from kumo.testing.fabric import Fabric
from kumo.testing.netns import Vm


def wait_ping(vm: Vm, address: str, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if vm.ping(address, wait=0.5):
            return True
    return False


def until(probe: Callable[[], bool], within: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(step)
    return probe()


def start_iperf3(
    client: Vm, server: Vm, address: str, seconds: int, *extra: str
) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    """A one-shot iperf3 server in `server` and a client in `client` reporting every second (`extra`: e.g.
    -R, -B ADDRESS, -p PORT); collect with iperf3_rates."""
    port = extra[extra.index("-p") + 1] if "-p" in extra else "5201"
    srv = server.popen("iperf3", "-s", "-1", "-p", port, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    cli = client.popen("iperf3", "-c", address, "-t", str(seconds), "-i", "1", "-J", *extra, stdout=-1, stderr=-1)
    return srv, cli


def iperf3_rates(srv: subprocess.Popen[str], cli: subprocess.Popen[str], timeout: float) -> list[float]:
    """The client's per-second received rates (the server is stopped in any case)."""
    try:
        out, err = cli.communicate(timeout=timeout)
    finally:
        srv.kill()
        srv.wait()
    assert cli.returncode == 0, out[-2000:] + err[-2000:]
    return [interval["sum"]["bits_per_second"] for interval in json.loads(out)["intervals"]]


def iperf3(client: Vm, server: Vm, address: str, seconds: int, *extra: str) -> list[float]:
    """Per-second received rates of an iperf3 run, waited for."""
    return iperf3_rates(*start_iperf3(client, server, address, seconds, *extra), timeout=seconds + 30)


# broadcasts `broadcast` sends: more than background traffic could add to a VM's counter while a test waits
BROADCASTS = 200


def received(vm: Vm) -> int:
    """Packets vm's eth0 has received so far."""
    return int(vm.run("cat", "/sys/class/net/eth0/statistics/rx_packets", check=True).stdout)


def broadcast(vm: Vm, address: str = "10.0.1.255") -> None:
    """Send BROADCASTS UDP datagrams from vm to the broadcast `address` (Ethernet ff:ff:ff:ff:ff:ff), from the
    same port every time: one flow, which the kernel forwards on its own once installed."""
    code = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1); s.bind(('', 40009)); "
        f"[s.sendto(b'all', ('{address}', 9)) for _ in range({BROADCASTS})]"
    )
    vm.run(sys.executable, "-c", code, check=True)


def all_received(vms: list[Vm], before: dict[str, int], within: float = 5.0) -> dict[str, int]:
    """How many packets each VM received since `before` (its `received`), once every one has had at least
    BROADCASTS, or time is up."""
    deadline = time.monotonic() + within
    while True:
        got = {vm.name: received(vm) - before[vm.name] for vm in vms}
        if min(got.values()) >= BROADCASTS or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def describe(fabric: Fabric) -> str:
    """Every host's counters and flows (for failure messages)."""
    return "\n".join(f"{h.host_id}: {h.agent_stats()['agent']} {h.flows()}" for h in fabric.hosts)


CONNECT_FROM_PORTS = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
for sport in range(int(sys.argv[3]), int(sys.argv[4])):  # one new connection each
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", sport))
    s.settimeout(2); s.connect((host, port)); s.sendall(b"x"); s.recv(1); s.close()
"""
ECHO_ONCE_EACH = """
import socket, sys
port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(("0.0.0.0", port))
srv.listen(64)
while True:
    c, _ = srv.accept(); c.sendall(c.recv(1)); c.close()
"""


def server_firewall(api: Client, port_id: str, name: str) -> str:
    """A stateful firewall on the way to the VM of `port_id`: replies accepted (match_return_flow), new TCP
    connections to 8080 accepted, the rest dropped. Returns the chain's id."""
    chain: str = api.collection("chains").create(name=name)["id"]
    rules = api.collection("rules")
    rules.create(chain_id=chain, type="accept", match_return_flow=True)
    rules.create(chain_id=chain, type="accept", nw_proto=6, tp_dst={"start": 8080, "end": 8080})
    rules.create(chain_id=chain, type="drop")
    api.collection("ports").update(port_id, outbound_filter_id=chain)
    return chain


@contextlib.contextmanager
def echo_servers(vm: Vm, *ports: str) -> Iterator[None]:
    """ECHO_ONCE_EACH on each of `ports` of `vm`, stopped on exit."""
    servers = [vm.popen(sys.executable, "-c", ECHO_ONCE_EACH, port) for port in ports]
    try:
        time.sleep(0.5)
        yield
    finally:
        for server in servers:
            server.kill()
            server.wait()
