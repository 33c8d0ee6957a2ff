"""A real Prometheus server (Debian `prometheus`) for tests: on loopback inside a network namespace, scraping
the targets it is given every second, with its data in a temporary directory; always stopped."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from kumo.testing.common import free_port, stop_process, wait_ready


class PrometheusServer:
    def __init__(self, targets: dict[str, str], netns: str | None = None, bearer_token: str | None = None) -> None:
        """`targets`: job name -> ADDRESS:PORT (its /metrics is scraped every second)."""
        if shutil.which("prometheus") is None:
            raise RuntimeError("prometheus is not installed: `make setup` installs Debian's prometheus")
        self.targets = targets
        self.netns = netns
        self.bearer_token = bearer_token
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="kumo-prometheus-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        jobs = []
        for job, target in self.targets.items():
            auth = f"    authorization: {{credentials: {json.dumps(self.bearer_token)}}}\n" if self.bearer_token else ""
            jobs.append(f"  - job_name: {job}\n{auth}    static_configs: [{{targets: [{json.dumps(target)}]}}]\n")
        return "global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n" + "".join(jobs)

    def start(self) -> None:
        (self.dir / "prometheus.yml").write_text(self._config())
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        command = [
            "prometheus",
            f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self.proc = subprocess.Popen(
            [*prefix, *command],
            stdout=open(self.dir / "prometheus.log", "wb"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_ready(self.proc, self._ready, 30.0, "prometheus", self._log)
        except RuntimeError:
            self.stop()
            raise

    def _log(self) -> str:
        return (self.dir / "prometheus.log").read_text(errors="replace")

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as answer:  # (inside the netns: the caller's)
            return answer.read()

    def _ready(self) -> bool:
        return self.query_ready()

    def query_ready(self) -> bool:
        try:
            return b"Ready" in self._get("/-/ready")
        except OSError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result of an instant PromQL query (the HTTP API's data.result)."""
        answer = json.loads(self._get("/api/v1/query?" + urllib.parse.urlencode({"query": promql})))
        if answer.get("status") != "success":
            raise RuntimeError(f"PromQL {promql!r}: {answer}")
        return list(answer["data"]["result"])

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
