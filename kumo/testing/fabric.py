"""Many hosts on one machine, for multi-host tests and benches.

An underlay namespace holds a Linux bridge (the IP fabric, 10.99.0.0/24), a real ZooKeeper listening on the
bridge's address and the `kumo api` servers; every host is a namespace joined to the bridge by a veth pair
(underlay MTU 1500), running `kumo agent --store zookeeper://...` with `--tunnel-ip` its underlay address,
all hosts members of one tunnel zone. VMs are namespaces plugged into their host. Everything is deleted on
stop, also after a failure; nothing is routed out of the machine.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from kumo.client import Client
from kumo.testing.netns import HostNamespace, Vm, inside, ip
from kumo.testing.processes import AgentProcess, ApiProcess
from kumo.testing.redis import RedisServer
from kumo.testing.zookeeper import ZooKeeperEnsemble, ZooKeeperServer

UNDERLAY_NET = "10.99.0"
FABRIC_ADDRESS = f"{UNDERLAY_NET}.254"  # the bridge: ZooKeeper listens here


class FabricHost(HostNamespace):
    """One host: a namespace on the underlay running `kumo agent`."""

    def __init__(self, fabric: Fabric, index: int) -> None:
        super().__init__(fabric.workdir, f"kumo-f{fabric.tag}-h{index}", fabric.workdir / f"host-{index}")
        self.fabric = fabric
        self.index = index
        self.host_id = f"host-{index}"
        self.tunnel_ip = f"{UNDERLAY_NET}.{index}"
        self.agent: AgentProcess | None = None

    def join_underlay(self) -> None:
        uplink = f"u{self.fabric.tag}{self.index}"
        ip(
            "-n",
            self.fabric.netns,
            "link",
            "add",
            uplink,
            "type",
            "veth",
            "peer",
            "name",
            "underlay0",
            "netns",
            self.netns,
        )
        ip("-n", self.fabric.netns, "link", "set", uplink, "master", "br0", "up")
        ip("-n", self.netns, "addr", "add", f"{self.tunnel_ip}/24", "dev", "underlay0")
        ip("-n", self.netns, "link", "set", "underlay0", "mtu", "1500", "up")

    def start_agent(self, *extra: str) -> None:
        self.agent = AgentProcess(
            [
                "--store",
                self.fabric.store_url,
                "--host-id",
                self.host_id,
                "--tunnel-ip",
                self.tunnel_ip,
                *self.fabric.agent_args,
                *extra,
            ],
            self.state_dir,
            self.fabric.workdir / f"{self.host_id}.log",
            prefix=["ip", "netns", "exec", self.netns],
        )
        self.agent.start()

    def kill_agent(self) -> None:
        if self.agent is not None:
            self.agent.kill()

    def stop_agent(self) -> None:
        if self.agent is not None:
            self.agent.stop()

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns]

    def flows(self) -> list[dict[str, Any]]:
        """This host's kernel flows, as `kumo flows --json` shows them."""
        done = self.kumo("--json", "flows", "--state-dir", str(self.state_dir))
        if done.returncode != 0:
            raise RuntimeError(f"kumo flows on {self.host_id}: {done.stderr}")
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def kumo(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The `kumo` CLI on this host (its agent's commands: `flows`, `agent stats`)."""
        return subprocess.run(
            [*self.prefix, sys.executable, "-m", "kumo.cli.main", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


class Fabric:
    """`with Fabric(workdir, hosts=3) as fabric:`; talk to the API inside `with inside(fabric.netns):`."""

    def __init__(
        self,
        workdir: Path,
        hosts: int = 3,
        api_servers: int = 1,
        agent_args: tuple[str, ...] = (),
        redis: bool = False,
        ensemble: int = 1,
        zookeeper_heap: str = "256m",
        zookeeper_acl: bool = True,
    ) -> None:
        self.workdir = workdir
        self.tag = uuid.uuid4().hex[:6]
        self.netns = f"kumo-f{self.tag}-u"
        self.agent_args = agent_args
        # one ZooKeeper, or (`ensemble` > 1) an ensemble of that many on the underlay address
        self.zookeeper: ZooKeeperServer | ZooKeeperEnsemble = (
            ZooKeeperEnsemble(ensemble, address=FABRIC_ADDRESS, netns=self.netns)
            if ensemble > 1
            else ZooKeeperServer(address=FABRIC_ADDRESS, netns=self.netns, heap=zookeeper_heap)
        )
        # with `redis`, the agents share flow state through a Redis on the underlay (--flow-state)
        self.redis = (
            RedisServer(address=FABRIC_ADDRESS, netns=self.netns, password=secrets.token_hex(8)) if redis else None
        )
        self.chroot = f"/kumo-{self.tag}"
        # as in production: Kumo's znodes readable and writable only with these (a digest ACL), Redis with AUTH
        self.credentials = ("kumo", secrets.token_hex(8)) if zookeeper_acl else None
        self.apis: list[ApiProcess] = []
        self.api_count = api_servers
        self.hosts = [FabricHost(self, i + 1) for i in range(hosts)]
        self.zone_id = ""

    @property
    def store_url(self) -> str:
        auth = f"{self.credentials[0]}:{self.credentials[1]}@" if self.credentials else ""
        return f"zookeeper://{auth}{self.zookeeper.hosts}{self.chroot}"

    def start(self) -> Fabric:
        ip("netns", "add", self.netns)
        ip("-n", self.netns, "link", "set", "lo", "up")
        ip("-n", self.netns, "link", "add", "br0", "type", "bridge")
        ip("-n", self.netns, "addr", "add", f"{FABRIC_ADDRESS}/24", "dev", "br0")
        ip("-n", self.netns, "link", "set", "br0", "up")
        for host in self.hosts:
            host.create()
            host.join_underlay()
        self.zookeeper.start()
        if self.redis is not None:
            self.redis.start()
            self.agent_args = (*self.agent_args, "--flow-state", self.redis.url)
        for i in range(self.api_count):
            api = ApiProcess(
                self.store_url,
                self.workdir / f"api-{i}.log",
                port=8181 + i,
                prefix=["ip", "netns", "exec", self.netns],
            )
            self.apis.append(api)
            with inside(self.netns):
                api.start(timeout=60)
        for host in self.hosts:
            host.start_agent()
        with inside(self.netns):
            api_client = self.client()
            self.zone_id = api_client.collection("tunnel_zones").create(name="underlay", type="vxlan")["id"]
            for host in self.hosts:
                api_client.put_tunnel_zone_member(self.zone_id, host.host_id, host.tunnel_ip)
        return self

    def client(self, index: int = 0) -> Client:
        """A client of API server `index`: use it inside `with inside(fabric.netns):`."""
        return Client(f"http://127.0.0.1:{8181 + index}")

    def stop(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(Exception):
                host.stop_agent()
        for api in self.apis:
            with contextlib.suppress(Exception):
                api.stop()
        with contextlib.suppress(Exception):
            self.zookeeper.stop()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.stop()
            self.redis.cleanup()
        for host in self.hosts:
            host.delete()  # (with what a killed agent left: its BGP speakers' and checkers' namespaces)
        ip("netns", "del", self.netns, check=False)
        self.zookeeper.cleanup()

    def __enter__(self) -> Fabric:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def underlay_capture(host: FabricHost, count: int, seconds: float) -> subprocess.Popen[str]:
    """tcpdump of VXLAN (UDP 4789) on a host's underlay interface: `-c count`, bounded by `timeout`."""
    tcpdump = ["tcpdump", "-n", "-l", "-c", str(count), "-i", "underlay0", "udp", "port", "4789"]
    return subprocess.Popen(
        [*host.prefix, "timeout", str(seconds), *tcpdump], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )


def two_legged(first: FabricHost, second: FabricHost, name: str) -> tuple[Vm, str]:
    """An "outside" namespace behind two uplinks: eth0 (192.0.2.1/24) plugged into `first`, eth1
    (198.51.100.1/24) into `second`; ARP requests from each interface's own address (a router answers only
    its subnet's). Returns it and its second leg's interface name on `second`."""
    outside = first.vm(name)
    leg = f"t{second.tag}{name}b"[:15]
    ip("-n", second.netns, "link", "add", leg, "type", "veth", "peer", "name", "eth1", "netns", outside.netns)
    ip("-n", second.netns, "link", "set", leg, "up")
    outside.run("ip", "addr", "add", "192.0.2.1/24", "dev", "eth0", check=True)
    outside.run("ip", "addr", "add", "198.51.100.1/24", "dev", "eth1", check=True)
    outside.run("ip", "link", "set", "eth1", "mtu", "1450", "up", check=True)
    outside.run("sysctl", "-qw", "net.ipv4.conf.all.arp_announce=2", check=True)
    return outside, leg
