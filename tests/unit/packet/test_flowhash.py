from __future__ import annotations

import os
import subprocess
import sys


def test_flow_hash_is_the_same_in_every_process() -> None:
    """Agents on different hosts must pick the same ECMP path, NAT port and pool member for a flow."""
    code = "from kumo.packet.flowhash import flow_hash; print(flow_hash((6, 167772427, 1000, 167903757, 80)))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "random")
    }
    assert len(outputs) == 1
