"""Waits and traffic shared by the integration tests: a ping that is answered within a time, a condition
that becomes true within a time, iperf3 runs whose every second is reported, and what the hosts of a fabric
say when a test fails."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

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


def describe(fabric: Fabric) -> str:
    """Every host's counters and flows (for failure messages)."""
    return "\n".join(f"{h.host_id}: {h.agent_stats()['agent']} {h.flows()}" for h in fabric.hosts)
