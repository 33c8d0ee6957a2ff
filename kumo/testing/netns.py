"""Network namespaces for integration tests: a host namespace running `kumo up` (API + agent + datapath)
and VM namespaces plugged into it by veth pairs. Names are unique per test; everything is deleted on stop,
also after a failure. No address of the machine's own interfaces is used and nothing is routed out: the VMs
only reach each other through the host namespace's datapath.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kumo.client import Client
from kumo.testing.processes import ApiProcess

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    """setns(2) for the calling thread (os.setns arrives only with Python 3.12)."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


@contextlib.contextmanager
def inside(netns: str) -> Iterator[None]:
    """Run the calling thread inside `netns` (setns is per thread), then return to where it was."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(target)
        yield
    finally:
        _setns(home)
        os.close(home)
        os.close(target)


@dataclass
class Vm:
    """A VM: a namespace with eth0, whose other end (`interface`) sits in the host namespace."""

    name: str
    netns: str
    interface: str
    mac: str

    def run(self, *cmd: str, timeout: float = 30, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, *cmd], capture_output=True, text=True, timeout=timeout, check=check
        )

    def popen(self, *cmd: str, **kwargs: object) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", self.netns, *cmd], text=True, **kwargs)  # type: ignore[call-overload]

    def ping(self, address: str, count: int = 1, wait: float = 1.0, ttl: int | None = None) -> bool:
        args = ["ping", "-c", str(count), "-W", str(wait), "-i", "0.2"]
        if ttl is not None:
            args += ["-t", str(ttl)]
        return self.run(*args, address, timeout=count * (wait + 1) + 5).returncode == 0

    def iperf3(self, server: str, seconds: int, *extra: str) -> float:
        """Received bits per second of an iperf3 TCP run to `server` (an `iperf3 -s` must be listening)."""
        done = self.run("iperf3", "-c", server, "-t", str(seconds), "-J", *extra, timeout=seconds + 30)
        if done.returncode != 0:
            raise RuntimeError(f"iperf3 to {server} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        return float(json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"])

    def udhcpc(self, script: Path, lease: Path) -> subprocess.CompletedProcess[str]:
        """busybox udhcpc on eth0 until bound (5 tries, 1 s apart); `script` gets LEASE=`lease` to write to."""
        args = ["-i", "eth0", "-s", str(script), "-q", "-n", "-f", "-t", "5", "-T", "1"]
        return self.run("env", f"LEASE={lease}", "busybox", "udhcpc", *args, timeout=30)

    def connects(self, address: str, port: int) -> bool:
        """A TCP connection to address:port opens within 2 s."""
        code = f"import socket; socket.create_connection(({address!r}, {port}), timeout=2).close()"
        return self.run(sys.executable, "-c", code, timeout=10).returncode == 0

    def address(self, cidr: str, gateway: str | None = None) -> None:
        self.run("ip", "addr", "add", cidr, "dev", "eth0", check=True)
        if gateway:
            self.run("ip", "route", "add", "default", "via", gateway, check=True)


class HostNamespace:
    """A host's network namespace with VMs plugged into it by veth pairs; deleted with them on stop. Its
    agent keeps its host id and control socket in `state_dir`."""

    def __init__(self, workdir: Path, netns: str | None = None, state_dir: Path | None = None) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.netns = netns or f"kumo-h{self.tag}"
        self.workdir = workdir
        self.state_dir = state_dir or workdir / "state"
        self.vms: list[Vm] = []
        self._macs = 0

    def create(self) -> None:
        ip("netns", "add", self.netns)
        ip("-n", self.netns, "link", "set", "lo", "up")

    def vm(self, name: str, mtu: int = 1450, mac: str | None = None) -> Vm:
        self._macs += 1
        mac = mac or f"02:00:{int(self.tag[:2], 16):02x}:{int(self.tag[2:4], 16):02x}:00:{self._macs:02x}"
        vm = Vm(name, f"kumo-v{self.tag}-{name}"[:32], f"t{self.tag}{name}"[:15], mac)
        ip("netns", "add", vm.netns)
        self.vms.append(vm)
        self.plug(vm, mtu)
        ip("-n", vm.netns, "link", "set", "lo", "up")
        with contextlib.suppress(OSError):  # no IPv6 chatter (router solicitations) in the tests' captures
            vm.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        return vm

    def plug(self, vm: Vm, mtu: int = 1450) -> None:
        """(Re)create a VM's veth pair: its interface comes (back) to the host namespace."""
        ip("-n", self.netns, "link", "add", vm.interface, "type", "veth", "peer", "name", "eth0", "netns", vm.netns)
        ip("-n", self.netns, "link", "set", vm.interface, "up")
        ip("-n", vm.netns, "link", "set", "eth0", "address", vm.mac, "mtu", str(mtu), "up")

    def unplug(self, vm: Vm) -> None:
        ip("-n", self.netns, "link", "del", vm.interface)

    def agent_stats(self) -> dict[str, Any]:
        """What `kumo agent stats` shows, asked straight from the agent's control socket."""
        from kumo.agent.control import ask

        return ask(self.state_dir / "agent.sock", "stats")  # type: ignore[no-any-return]

    def delete(self) -> None:
        from kumo.edge import namespace as bgp_namespaces
        from kumo.lb import namespace as checker_namespaces

        # (a killed agent leaves its BGP speakers' and health checkers' namespaces: their names are global)
        for module in (bgp_namespaces, checker_namespaces):
            module.remove_leftovers(self.state_dir)
        for vm in self.vms:
            ip("netns", "del", vm.netns, check=False)
        ip("netns", "del", self.netns, check=False)  # its interfaces, TC filters and BPF maps go with it


class VirtualHost(HostNamespace):
    """A host namespace running `kumo up`; VMs attach to it. Use as a context manager."""

    def __init__(self, workdir: Path, kumo_args: tuple[str, ...] = ()) -> None:
        super().__init__(workdir)
        self.kumo_args = kumo_args  # more options for `kumo up` (e.g. --idle-timeout 1)
        self.api: ApiProcess | None = None

    @property
    def host_id(self) -> str:
        return (self.state_dir / "host_id").read_text().strip()

    def start(self) -> VirtualHost:
        self.create()
        self.start_kumo()
        return self

    def start_kumo(self) -> None:
        self.api = ApiProcess(
            None,
            self.workdir / "kumo-up.log",
            port=8181,
            command=["up", "--state-dir", str(self.state_dir), *self.kumo_args],
            prefix=["ip", "netns", "exec", self.netns],
        )
        with inside(self.netns):
            self.api.start(timeout=60)

    def stop_kumo(self, kill: bool = False) -> int | None:
        """SIGTERM (or SIGKILL) to `kumo up`; its exit status after a SIGTERM (None if it had to be killed)."""
        if self.api is None:
            return None
        if kill:
            self.api.kill()
            return None
        return self.api.stop()

    def client(self) -> Client:
        """A client of this host's API: use it inside `with inside(host.netns):`."""
        return Client(f"http://127.0.0.1:{self.api.port if self.api else 8181}")

    def kumo(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The `kumo` CLI inside the host namespace, against this host's API and agent."""
        env = {**os.environ, "KUMO_API": f"http://127.0.0.1:{self.api.port if self.api else 8181}"}
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, sys.executable, "-m", "kumo.cli.main", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )

    def stop(self) -> None:
        try:
            self.stop_kumo()
        finally:
            self.delete()

    def __enter__(self) -> VirtualHost:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def veth_pair(mtu: int = 1450) -> Iterator[tuple[Vm, Vm]]:
    """Two fresh namespaces joined by a plain veth pair (10.9.0.1/24 and 10.9.0.2/24 on eth0): the baseline
    the benchmarks measure Kumo against. Deleted on exit."""
    tag = uuid.uuid4().hex[:6]
    names = (f"kumo-pair-a{tag}", f"kumo-pair-b{tag}")
    try:
        for name in names:
            ip("netns", "add", name)
        ip("-n", names[0], "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", names[1])
        for name, address in zip(names, ("10.9.0.1/24", "10.9.0.2/24"), strict=True):
            ip("-n", name, "link", "set", "lo", "up")
            ip("-n", name, "link", "set", "eth0", "mtu", str(mtu), "up")
            ip("-n", name, "addr", "add", address, "dev", "eth0")
        yield Vm("a", names[0], "", ""), Vm("b", names[1], "", "")
    finally:
        for name in names:
            ip("netns", "del", name, check=False)
