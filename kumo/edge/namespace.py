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

from kumo.namespaces import NamespaceError, ip, remove, remove_recorded, write_record

PREFIX = "kumo-bgp-"
INNER = "uplink"


def namespace_name(port_id: str) -> str:
    return PREFIX + port_id[:8]


def outer_name(port_id: str) -> str:
    return "kb" + port_id[:8]


RECORD = "bgp-namespaces"  # in the agent's state directory: its speaker namespaces, one per line


def create(port_id: str, address: str, network_cidr: str, mac: str) -> int:
    """(Re)create the uplink's namespace; the ifindex of the veth's outer end."""
    name, outer = namespace_name(port_id), outer_name(port_id)
    remove(name)
    subprocess.run(["ip", "link", "del", outer], capture_output=True, timeout=10)
    prefix = ipaddress.IPv4Network(network_cidr).prefixlen
    try:
        ip("netns", "add", name)
        ip("link", "add", outer, "type", "veth", "peer", "name", INNER, "netns", name)
        for key in ("all", "default"):
            ip("netns", "exec", name, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
        ip("netns", "exec", name, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=8")
        ip("-n", name, "link", "set", INNER, "address", mac)
        ip("-n", name, "addr", "add", f"{address}/{prefix}", "dev", INNER)
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "link", "set", INNER, "up")
        ip("link", "set", outer, "up")
        return socket.if_nametoindex(outer)
    except (NamespaceError, OSError):
        remove(name)
        raise


def remove_leftovers(state_dir: Path) -> None:
    """Remove the namespaces of this kind an earlier agent of `state_dir` made and left (it was killed)."""
    remove_recorded(state_dir, RECORD, PREFIX)


def record(state_dir: Path, names: list[str]) -> None:
    write_record(state_dir, RECORD, names)
