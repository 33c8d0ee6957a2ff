"""Run a throw-away ZooKeeper 3.8 (Debian's `zookeeper` package) on a free loopback port.

Debian services do not start on install here, so it is started by hand, as DATAPATH-NOTES.md measured:
`java ... org.apache.zookeeper.server.ZooKeeperServerMain zoo.cfg`, ready (answers `ruok`) in ~1.5 s.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from kumo.testing.common import free_port, wait_ready

_JARS = [
    "/usr/share/java/zookeeper.jar",
    "/usr/share/java/slf4j-log4j12.jar",
    "/usr/share/java/log4j-1.2.jar",
    "/usr/share/java/slf4j-api.jar",
]


def four_letter(port: int, word: str, timeout: float = 1.0) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(word.encode())
        chunks = []
        while data := s.recv(4096):
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


class ZooKeeperServer:
    """`with ZooKeeperServer() as zk: zk.hosts` -> "127.0.0.1:PORT"; stop() and start() for outage tests."""

    def __init__(self, start_timeout: float = 30.0) -> None:
        if not Path(_JARS[0]).exists() or shutil.which("java") is None:
            raise RuntimeError(
                "ZooKeeper is not installed: `make setup` installs Debian's zookeeper and default-jre-headless"
            )
        self.start_timeout = start_timeout
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="kumo-zk-"))
        self.proc: subprocess.Popen[bytes] | None = None
        conf = self.dir / "conf"
        conf.mkdir()
        (conf / "zoo.cfg").write_text(
            "\n".join(
                [
                    "tickTime=500",
                    "minSessionTimeout=1000",
                    "maxSessionTimeout=30000",
                    f"dataDir={self.dir / 'data'}",
                    f"clientPort={self.port}",
                    "clientPortAddress=127.0.0.1",
                    "admin.enableServer=false",
                    "4lw.commands.whitelist=ruok,srvr,mntr,stat",
                    "forceSync=no",
                    "",
                ]
            )
        )
        (conf / "log4j.properties").write_text(
            "log4j.rootLogger=WARN, F\nlog4j.appender.F=org.apache.log4j.FileAppender\n"
            f"log4j.appender.F.File={self.dir / 'zookeeper.log'}\n"
            "log4j.appender.F.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.F.layout.ConversionPattern=%d %p %c: %m%n\n"
        )

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        classpath = ":".join([str(self.dir / "conf"), *[j for j in _JARS if Path(j).exists()]])
        self.proc = subprocess.Popen(
            [
                "java",
                "-Xmx256m",
                "-Dzookeeper.admin.enableServer=false",
                "-cp",
                classpath,
                "org.apache.zookeeper.server.ZooKeeperServerMain",
                str(self.dir / "conf" / "zoo.cfg"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "stderr.log", "wb"),  # noqa: SIM115 - closed with the process
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_ready(
                self.proc,
                lambda: four_letter(self.port, "ruok") == "imok",
                self.start_timeout,
                f"ZooKeeper on port {self.port}",
                (self.dir / "stderr.log").read_text,
            )
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> ZooKeeperServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
