"""The service units in deploy/systemd pass `systemd-analyze verify` (with `kumo` where this checkout's is:
the units expect /usr/local/bin/kumo, docs/deploy.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"


def test_the_units_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: `make setup` installs Debian's systemd")
    kumo = Path(sys.executable).with_name("kumo")
    assert kumo.exists(), kumo
    units = sorted(UNITS.glob("*.service"))
    assert {u.name for u in units} == {"kumo-agent.service", "kumo-api.service", "kumo-up.service"}
    for unit in units:
        (tmp_path / unit.name).write_text(unit.read_text().replace("/usr/local/bin/kumo", str(kumo)))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / u.name) for u in units)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stdout + done.stderr
    for unit in units:
        text = unit.read_text()
        assert "Restart=on-failure" in text and "ExecStartPre=" in text and "CapabilityBoundingSet=" in text
    env = (UNITS / "kumo.env").read_text()
    assert "KUMO_STORE=" in env and "KUMO_FLOW_STATE=" in env
