"""An uplink's speaker namespace: `kumo-bgp-<port>` with a veth whose inner end holds the uplink port's
address and MAC. Its outer end stays in the host, where the datapath program hands it the uplink's BGP and
ARP and sends out of the uplink whatever comes back (kumo/datapath/bpf/lib/speakers.h).

The inner end never answers ARP (arp_ignore 8): the virtual router answers for its port's address itself,
with the same MAC, and one answer is enough. It has no IPv6, so it sends nothing but BGP and ARP."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
from pathlib import Path

from kumo.topology.errors import KumoError

PREFIX = "kumo-bgp-"
INNER = "uplink"


class NamespaceError(KumoError):
    pass


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise NamespaceError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def namespace_name(port_id: str) -> str:
    return PREFIX + port_id[:8]


def outer_name(port_id: str) -> str:
    return "kb" + port_id[:8]


RECORD = "bgp-namespaces"  # in the agent's state directory: its speaker namespaces, one per line


def recorded(state_dir: Path) -> list[str]:
    """The speaker namespaces the agent of `state_dir` made (a killed agent's are still there). Namespace
    names are global to the machine, so only those an agent recorded are its own to remove."""
    try:
        names = (state_dir / RECORD).read_text().split()
    except FileNotFoundError:
        return []
    return [name for name in names if name.startswith(PREFIX)]


def record(state_dir: Path, names: list[str]) -> None:
    (state_dir / RECORD).write_text("".join(f"{name}\n" for name in names))


def remove(name: str) -> None:
    """Remove a speaker namespace and its veth (the pair goes with its inner end). Idempotent."""
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def create(port_id: str, address: str, network_cidr: str, mac: str) -> int:
    """(Re)create the uplink's namespace; the ifindex of the veth's outer end."""
    name, outer = namespace_name(port_id), outer_name(port_id)
    remove(name)
    subprocess.run(["ip", "link", "del", outer], capture_output=True, timeout=10)
    prefix = ipaddress.IPv4Network(network_cidr).prefixlen
    try:
        _ip("netns", "add", name)
        _ip("link", "add", outer, "type", "veth", "peer", "name", INNER, "netns", name)
        for key in ("all", "default"):
            _ip("netns", "exec", name, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
        _ip("netns", "exec", name, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=8")
        _ip("-n", name, "link", "set", INNER, "address", mac)
        _ip("-n", name, "addr", "add", f"{address}/{prefix}", "dev", INNER)
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "set", INNER, "up")
        _ip("link", "set", outer, "up")
        return socket.if_nametoindex(outer)
    except (NamespaceError, OSError):
        remove(name)
        raise
