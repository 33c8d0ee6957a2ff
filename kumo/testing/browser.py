"""Headless Chromium (Debian `chromium`), run inside a network namespace when given: the DOM a page has once
its scripts ran, or a screenshot of it. Bounded in time; each run has a profile directory of its own."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

VIRTUAL_TIME_MS = 8000  # the page's scripts run (and its fetches complete) within this much virtual time


def chromium_command() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("headless Chromium is missing: apt-get install chromium (make test installs it)")


def _run(url: str, mode: list[str], netns: str | None, width: int, height: int, timeout: float) -> str:
    with tempfile.TemporaryDirectory(prefix="kumo-chromium-") as profile:
        command = [
            chromium_command(),
            "--headless",
            "--no-sandbox",  # (as root: Chromium's sandbox refuses to run as root)
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--virtual-time-budget={VIRTUAL_TIME_MS}",
            *mode,
            url,
        ]
        prefix = ["ip", "netns", "exec", netns] if netns else []
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr[-500:]}")
        return done.stdout


def dump_dom(url: str, netns: str | None = None, timeout: float = 60.0) -> str:
    """The page's DOM, serialized, after its scripts ran."""
    return _run(url, ["--dump-dom"], netns, 1400, 900, timeout)


def screenshot(url: str, path: Path, netns: str | None = None, width: int = 1500, height: int = 950) -> Path:
    """A PNG of the page after its scripts ran."""
    _run(url, [f"--screenshot={path}"], netns, width, height, 60.0)
    if not path.exists():
        raise RuntimeError(f"chromium wrote no screenshot to {path}")
    return path
