"""The README's tutorial, run as an operator types it: its shell blocks as written, one after the other in one
bash, `kumo up` in the background (the tutorial's second terminal), stopped before the clean-up block.

So that `ip netns add vm1`, /var/lib/kumo and /tmp/lease.sh touch nothing of this machine, the whole run
happens in a private mount and network namespace (unshare) with tmpfs over /run, /var/lib and /tmp: the
commands are the README's, the names they create are private and vanish with the run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START, END = "<!-- tutorial:start -->", "<!-- tutorial:end -->"
UP = re.compile(r"^kumo up\b.*$", re.M)

# What stands for the second terminal: `kumo up` in the background, until its API answers.
BACKGROUND_UP = (
    "kumo up > /tmp/kumo-up.log 2>&1 & KUMO_UP=$!\n"
    "for _ in $(seq 150); do kumo host list > /dev/null 2>&1 && break; sleep 0.2; done"
)
STOP_UP = 'kill -INT $KUMO_UP; wait $KUMO_UP; echo "kumo up exited: $?"'
# The private namespace: tmpfs over /run, /var/lib and /tmp, with the repository (whose .venv the tutorial
# uses) bound back in place in case it lives under one of them; the script is read before they are covered.
PRIVATE = (
    'set -e; script=$(cat "$0"); repo="$1"; mount --bind "$repo" /mnt; '
    "mount -t tmpfs kumo-run /run; mount -t tmpfs kumo-lib /var/lib; mount -t tmpfs kumo-tmp /tmp; "
    'mkdir -p "$repo"; mount --bind /mnt "$repo"; '
    "umount -l /sys; mount -t sysfs sysfs /sys; ip link set lo up; "
    'exec bash -x -c "$script"'
)


def tutorial_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    assert START in text and END in text, "the README's tutorial lost its markers"
    section = text.split(START, 1)[1].split(END, 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def tutorial_script(blocks: list[str]) -> str:
    assert len(blocks) >= 3 and UP.search(blocks[0]), "the tutorial starts with a block that runs `kumo up`"
    parts = [f"cd {REPO}", UP.sub(BACKGROUND_UP, blocks[0])]
    parts += blocks[1:-1]
    parts += [STOP_UP, blocks[-1]]
    return "\n".join(parts)


def outputs_by_command(log: str) -> dict[str, str]:
    """What each traced command printed (bash -x prints `+ command` before running it)."""
    out: dict[str, str] = {}
    current = ""
    for line in log.splitlines():
        if line.startswith("+ "):
            current = line[2:]
            out.setdefault(current, "")
        else:
            out[current] = out.get(current, "") + line + "\n"
    return out


def test_the_readme_tutorial_runs_as_written(tmp_path: Path) -> None:
    script = tmp_path / "tutorial.sh"
    script.write_text(tutorial_script(tutorial_blocks()))
    proc = subprocess.Popen(
        ["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", PRIVATE, str(script), str(REPO)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        log, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # (kumo up with it: its namespaces go with the process)
            proc.wait()
    (tmp_path / "tutorial.log").write_text(log)
    said = outputs_by_command(log)

    def output(command: str) -> str:
        assert command in said, f"the tutorial no longer runs `{command}`:\n{log[-3000:]}"
        return said[command]

    errors = [line for line in log.splitlines() if line.startswith(("error:", "bash:", "sh:")) or "not found" in line]
    assert errors == [], log[-4000:]
    assert "lease of 10.0.1.11 obtained" in output("ip netns exec vm1 busybox udhcpc -i eth0 -q -n -s /tmp/lease.sh")
    assert "inet 10.0.1.11/24" in output("ip -n vm1 addr show eth0")
    assert "mtu 1450" in output("ip -n vm1 addr show eth0")
    assert " 2 received" in output("ip netns exec vm1 ping -c 2 10.0.1.12")
    assert " 0 received" in output("ip netns exec vm1 ping -c 2 -W 1 10.0.1.12")  # the firewall
    assert " 2 received" in output("ip netns exec vm2 ping -c 2 10.0.1.11")  # replies to vm2's own
    assert " 2 received" in output("ip netns exec outside ping -c 2 198.18.0.10")  # the floating IP
    assert " 2 received" in output("ip netns exec vm1 ping -c 2 192.0.2.1")
    assert "=> drop (chain_drop)" in output("kumo trace --port vm1 --src 10.0.1.11 --dst 10.0.1.12 --proto icmp")
    assert "dnat: rewrite ip_dst=10.0.1.11" in output("kumo trace --port uplink --src 192.0.2.1 --dst 198.18.0.10")
    # the eBGP uplink: established, routes both ways, the floating IP announced as a /32
    assert "established" in output("kumo bgp-peer list --router edge")
    assert "203.0.113.0/24" in output("kumo route list --router edge")
    bird_routes = output("birdc -s /run/bird-outside.ctl show route")
    assert "10.0.1.0/24" in bird_routes and "198.18.0.10/32" in bird_routes, bird_routes
    assert " 2 received" in output("ip netns exec vm1 ping -c 2 203.0.113.1")
    assert " 3 received" in output("ip netns exec outside ping -c 3 198.18.0.10")  # with no static route
    assert re.search(r"^\d+ flows$", output("kumo flows"), re.M)
    assert "agent counters" in output("kumo agent stats")
    assert "kumo up exited: 0" in log
    assert proc.returncode == 0, log[-3000:]
