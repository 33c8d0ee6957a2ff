"""BIRD 2 as an external BGP peer in tests: started in a namespace the test made, with its own control
socket (`birdc -s`), always stopped. Never the system service."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


class Bird:
    def __init__(self, netns: str, workdir: Path, name: str, config: str) -> None:
        self.netns = netns
        self.config_path = workdir / f"bird-{name}.conf"
        self.socket = workdir / f"bird-{name}.ctl"
        self.pid_path = workdir / f"bird-{name}.pid"
        self.log_path = workdir / f"bird-{name}.log"
        self.config = f'log "{self.log_path}" all;\n{config}'

        self.pid: int | None = None

    def start(self, timeout: float = 10) -> Bird:
        self.config_path.write_text(self.config)
        self.pid_path.unlink(missing_ok=True)
        cmd = ["bird", "-c", str(self.config_path), "-s", str(self.socket), "-P", str(self.pid_path)]
        done = subprocess.run(["ip", "netns", "exec", self.netns, *cmd], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"bird did not start: {done.stderr.strip()}")
        deadline = time.monotonic() + timeout
        while not self.pid_path.exists() or not self.pid_path.read_text().strip():
            if time.monotonic() > deadline:
                raise RuntimeError(f"bird wrote no pid file in {timeout} s")
            time.sleep(0.05)
        self.pid = int(self.pid_path.read_text())
        return self

    def birdc(self, *command: str) -> str:
        done = subprocess.run(["birdc", "-s", str(self.socket), *command], capture_output=True, text=True, timeout=10)
        return done.stdout

    def reconfigure(self, config: str) -> None:
        """A new configuration, applied by `birdc configure` (BIRD keeps running and sessions it can keep)."""
        self.config = f'log "{self.log_path}" all;\n{config}'
        self.config_path.write_text(self.config)
        out = self.birdc("configure")
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
            raise RuntimeError(f"birdc configure: {out.strip()}")

    def state(self, protocol: str) -> str:
        """The BGP protocol's state column, e.g. "Established", "Active", "Connect"."""
        for line in self.birdc("show", "protocols", protocol).splitlines():
            if line.startswith(protocol + " "):
                return line.split()[-1]
        return ""

    def routes(self) -> str:
        return self.birdc("show", "route", "all")

    def stop(self, kill: bool = False) -> None:
        """Stop BIRD: gracefully (its sessions end with a Cease NOTIFICATION) or by SIGKILL."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            self.pid = None
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None

    def __enter__(self) -> Bird:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def peer_config(
    router_id: str,
    local_as: int,
    neighbor: str,
    neighbor_as: int,
    *,
    hold_time: int = 9,
    password: str | None = None,
    announce_interface: str = "lan",
    extra_prefixes: int = 0,
) -> str:
    """A BIRD peer of a Kumo uplink: announces the networks of `announce_interface` (and a flood of
    `extra_prefixes` /32s of 100.64.0.0/10), learns Kumo's routes into its kernel table (so that traffic
    towards Kumo's networks follows BGP), retries fast."""
    secret = f'    password "{password}";\n' if password else ""
    flood = "".join(f"    route 100.64.{i // 256}.{i % 256}/32 blackhole;\n" for i in range(extra_prefixes))
    flood = f"protocol static flood {{\n    ipv4;\n{flood}}}\n" if extra_prefixes else ""
    return f"""router id {router_id};
protocol device {{ scan time 1; }}
protocol direct {{ ipv4; interface "{announce_interface}"; }}
protocol kernel {{ ipv4 {{ import none; export where source = RTS_BGP; }}; }}
protocol bgp kumo {{
    local {router_id} as {local_as};
    neighbor {neighbor} as {neighbor_as};
    hold time {hold_time};
    connect retry time 1;
    error wait time 1, 2;
{secret}    ipv4 {{ import all; export where source ~ [ RTS_DEVICE, RTS_STATIC ]; }};
}}
{flood}"""
