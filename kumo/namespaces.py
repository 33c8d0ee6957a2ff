"""Network namespaces an agent makes for itself (the edge's BGP speakers, health monitoring's checkers):
their names are recorded in the agent's state directory, because namespace names are global to the machine
and only those an agent recorded are its own to remove (a killed agent's are removed by the next one)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kumo.topology.errors import KumoError


class NamespaceError(KumoError):
    pass


def ip(*args: str) -> None:
    """`ip ARGS`, or NamespaceError with what it said."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise NamespaceError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def recorded(state_dir: Path, record: str, prefix: str) -> list[str]:
    """The namespaces named `prefix`... the agent of `state_dir` recorded in its file `record`."""
    try:
        names = (state_dir / record).read_text().split()
    except FileNotFoundError:
        return []
    return [name for name in names if name.startswith(prefix)]


def remove_recorded(state_dir: Path, record: str, prefix: str) -> None:
    """Remove the namespaces an earlier agent of `state_dir` recorded in `record` and left (it was killed
    before it could remove them), and clear the record."""
    names = recorded(state_dir, record, prefix)
    for name in names:
        remove(name)
    if names:
        write_record(state_dir, record, [])


def write_record(state_dir: Path, record: str, names: list[str]) -> None:
    (state_dir / record).write_text("".join(f"{name}\n" for name in names))


def remove(name: str) -> None:
    """Remove a namespace and the veths whose inner ends it holds. Idempotent."""
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
