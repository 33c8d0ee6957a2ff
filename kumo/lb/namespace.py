"""A router's health-check namespace, `kumo-lbc-<router>`: a veth whose inner end holds CHECKER_ADDRESS, with
the router's checker port (ROUTER_ADDRESS, kumo.lb.manager) as its default gateway. The outer end is that
port's interface on this host, so that a check enters the virtual router as any client's packet would, and
tenant firewalls see it coming from CHECKER_ADDRESS."""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

from kumo.namespaces import NamespaceError, ip, remove, remove_recorded, write_record

PREFIX = "kumo-lbc-"
INNER = "eth0"
NETWORK = "169.254.99.0/30"  # link-local: never a tenant's network in practice, never routed off the router
ROUTER_ADDRESS = "169.254.99.1"
CHECKER_ADDRESS = "169.254.99.2"
RECORD = "lb-namespaces"  # in the agent's state directory: its checker namespaces, one per line
CLONE_NEWNET = 0x40000000


def namespace_name(router_id: str) -> str:
    return PREFIX + router_id[:8]


def outer_name(router_id: str) -> str:
    return "kl" + router_id[:8]


def create(router_id: str) -> str:
    """(Re)create the router's checker namespace; the name of the veth's outer end (the port's interface)."""
    name, outer = namespace_name(router_id), outer_name(router_id)
    remove(name)
    subprocess.run(["ip", "link", "del", outer], capture_output=True, timeout=10)
    try:
        ip("netns", "add", name)
        ip("link", "add", outer, "type", "veth", "peer", "name", INNER, "netns", name)
        for key in ("all", "default"):
            ip("netns", "exec", name, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
        ip("-n", name, "addr", "add", f"{CHECKER_ADDRESS}/30", "dev", INNER)
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "link", "set", INNER, "mtu", "1450", "up")  # (checks may cross VXLAN tunnels)
        ip("-n", name, "route", "add", "default", "via", ROUTER_ADDRESS)
        ip("link", "set", outer, "up")
        return outer
    except (NamespaceError, OSError):
        remove(name)
        raise


def enter(name: str) -> None:
    """Move the calling thread (only it) into namespace `name`: the sockets it opens from now on live there."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise NamespaceError(f"cannot enter namespace {name}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def remove_leftovers(state_dir: Path) -> None:
    """Remove the namespaces of this kind an earlier agent of `state_dir` made and left (it was killed)."""
    remove_recorded(state_dir, RECORD, PREFIX)


def record(state_dir: Path, names: list[str]) -> None:
    write_record(state_dir, RECORD, names)
