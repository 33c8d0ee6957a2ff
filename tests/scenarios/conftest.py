"""Operator scenarios: real `kumo api` processes, driven by the `kumo` CLI as a person would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any


@dataclass
class Cli:
    api_url: str

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUMO_API": self.api_url, "COLUMNS": "200"}
        return subprocess.run(
            [sys.executable, "-m", "kumo.cli.main", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    def __call__(self, *args: str) -> Any:
        """Run with --json; the command must succeed."""
        result = self.run(*args, "--json")
        assert result.returncode == 0, f"kumo {' '.join(args)} failed: {result.stderr}"
        return json.loads(result.stdout) if result.stdout.strip().startswith(("{", "[")) else result.stdout

    def fails(self, *args: str) -> str:
        """Run; the command must fail with exit 1 and one line on stderr, which is returned."""
        result = self.run(*args)
        assert result.returncode == 1, f"kumo {' '.join(args)} should fail: {result.stdout}{result.stderr}"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        return lines[0]
