"""A router's health-check namespace, `kumo-lbc-<router>`: a veth whose inner end holds CHECKER_ADDRESS, with
the router's checker port (ROUTER_ADDRESS, kumo.lb.manager) as its default gateway. The outer end is that
port's interface on this host, so that a check enters the virtual router as any client's packet would, and
tenant firewalls see it coming from CHECKER_ADDRESS."""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

from kumo.topology.errors import KumoError

PREFIX = "kumo-lbc-"
INNER = "eth0"
NETWORK = "169.254.99.0/30"  # link-local: never a tenant's network in practice, never routed off the router
ROUTER_ADDRESS = "169.254.99.1"
CHECKER_ADDRESS = "169.254.99.2"
RECORD = "lb-namespaces"  # in the agent's state directory: its checker namespaces, one per line
CLONE_NEWNET = 0x40000000


class NamespaceError(KumoError):
    pass


def namespace_name(router_id: str) -> str:
    return PREFIX + router_id[:8]


def outer_name(router_id: str) -> str:
    return "kl" + router_id[:8]


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise NamespaceError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def recorded(state_dir: Path) -> list[str]:
    """The checker namespaces the agent of `state_dir` made (a killed agent's are still there)."""
    try:
        names = (state_dir / RECORD).read_text().split()
    except FileNotFoundError:
        return []
    return [name for name in names if name.startswith(PREFIX)]


def record(state_dir: Path, names: list[str]) -> None:
    (state_dir / RECORD).write_text("".join(f"{name}\n" for name in names))


def remove(name: str) -> None:
    """Remove a checker namespace and its veth (the pair goes with its inner end). Idempotent."""
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def create(router_id: str) -> str:
    """(Re)create the router's checker namespace; the name of the veth's outer end (the port's interface)."""
    name, outer = namespace_name(router_id), outer_name(router_id)
    remove(name)
    subprocess.run(["ip", "link", "del", outer], capture_output=True, timeout=10)
    try:
        _ip("netns", "add", name)
        _ip("link", "add", outer, "type", "veth", "peer", "name", INNER, "netns", name)
        for key in ("all", "default"):
            _ip("netns", "exec", name, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
        _ip("-n", name, "addr", "add", f"{CHECKER_ADDRESS}/30", "dev", INNER)
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "set", INNER, "mtu", "1450", "up")  # (checks may cross VXLAN tunnels)
        _ip("-n", name, "route", "add", "default", "via", ROUTER_ADDRESS)
        _ip("link", "set", outer, "up")
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
