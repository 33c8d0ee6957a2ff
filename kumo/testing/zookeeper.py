"""Run a throw-away ZooKeeper 3.8 (Debian's `zookeeper` package) on a free loopback port.

Debian services do not start on install here, so it is started by hand, as DATAPATH-NOTES.md measured:
`java ... org.apache.zookeeper.server.ZooKeeperServerMain zoo.cfg`, ready (answers `ruok`) in ~1.5 s.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from kumo.testing.common import free_port, stop_process, wait_ready

ZK_MAIN = "org.apache.zookeeper.server.ZooKeeperServerMain"
_JARS = [
    "/usr/share/java/zookeeper.jar",
    "/usr/share/java/slf4j-log4j12.jar",
    "/usr/share/java/log4j-1.2.jar",
    "/usr/share/java/slf4j-api.jar",
]


def four_letter(port: int, word: str, timeout: float = 1.0, address: str = "127.0.0.1") -> str:
    with socket.create_connection((address, port), timeout=timeout) as s:
        s.sendall(word.encode())
        chunks = []
        while data := s.recv(4096):
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


class ZooKeeperServer:
    """`with ZooKeeperServer() as zk: zk.hosts` -> "127.0.0.1:PORT"; stop() and start() for outage tests.
    With `netns`, it runs inside that network namespace on `address` (multi-host tests: the underlay)."""

    def __init__(
        self,
        start_timeout: float = 30.0,
        address: str = "127.0.0.1",
        netns: str | None = None,
        quorum: tuple[int, list[str]] | None = None,
        heap: str = "256m",
    ) -> None:
        """`quorum`: (this server's id, every member's `server.N=...` line): a member of an ensemble; `heap`:
        the JVM's -Xmx (bench/scale_bench.py gives it more)."""
        if not Path(_JARS[0]).exists() or shutil.which("java") is None:
            raise RuntimeError(
                "ZooKeeper is not installed: `make setup` installs Debian's zookeeper and default-jre-headless"
            )
        self.start_timeout = start_timeout
        self.heap = heap
        self.address = address
        self.netns = netns
        self.port = free_port()  # (free here; a fresh namespace has every port free)
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
                    f"clientPortAddress={address}",
                    "admin.enableServer=false",
                    "4lw.commands.whitelist=ruok,srvr,mntr,stat,wchs,wchp",
                    "forceSync=no",
                    "maxClientCnxns=0",  # the scale bench's simulated hosts all connect from one address
                    *(["initLimit=10", "syncLimit=5", *quorum[1]] if quorum else []),
                    "",
                ]
            )
        )
        self.quorum = quorum
        if quorum:
            (self.dir / "data").mkdir()
            (self.dir / "data" / "myid").write_text(f"{quorum[0]}\n")
        (conf / "log4j.properties").write_text(
            "log4j.rootLogger=WARN, F\nlog4j.appender.F=org.apache.log4j.FileAppender\n"
            f"log4j.appender.F.File={self.dir / 'zookeeper.log'}\n"
            "log4j.appender.F.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.F.layout.ConversionPattern=%d %p %c: %m%n\n"
        )

    @property
    def hosts(self) -> str:
        return f"{self.address}:{self.port}"

    def start(self) -> None:
        self.launch()
        self.wait()

    def launch(self) -> None:
        """Start the process (wait() for it to serve: an ensemble's members serve once a quorum is up)."""
        classpath = ":".join([str(self.dir / "conf"), *[j for j in _JARS if Path(j).exists()]])
        main = "org.apache.zookeeper.server.quorum.QuorumPeerMain" if self.quorum else ZK_MAIN
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen(
            [
                *prefix,
                "java",
                f"-Xmx{self.heap}",
                "-Dzookeeper.admin.enableServer=false",
                "-cp",
                classpath,
                main,
                str(self.dir / "conf" / "zoo.cfg"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "stderr.log", "wb"),  # noqa: SIM115 - closed with the process
            stdin=subprocess.DEVNULL,
        )

    def wait(self) -> None:
        assert self.proc is not None
        try:
            wait_ready(
                self.proc,
                self._answers,
                self.start_timeout,
                f"ZooKeeper on port {self.port}",
                (self.dir / "stderr.log").read_text,
            )
        except RuntimeError:
            self.stop()
            raise

    def _answers(self) -> bool:
        return "Mode:" in self.ask("srvr") if self.quorum else self.ask("ruok") == "imok"

    def ask(self, word: str) -> str:
        """A four-letter word's answer ("" if the server does not answer)."""
        try:
            if self.netns is None:
                return four_letter(self.port, word, address=self.address)
            from kumo.testing.netns import inside

            with inside(self.netns):
                return four_letter(self.port, word, address=self.address)
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # (a frozen one cannot handle SIGTERM)
        stop_process(self.proc)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a server that dies at once (its connections reset, nothing flushed)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: a ZooKeeper that hangs without closing its connections (the silent failure)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> ZooKeeperServer:
        self.start()
        return self

    def cleanup(self) -> None:
        """Remove its data directory (after stop)."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self.cleanup()


class ZooKeeperEnsemble:
    """`size` ZooKeeper servers forming one ensemble (QuorumPeerMain) on `address`, ports of their own; the
    same interface as ZooKeeperServer (hosts, start, stop, cleanup) plus a member's stop/start, freeze and
    which one leads."""

    def __init__(self, size: int = 3, address: str = "127.0.0.1", netns: str | None = None) -> None:
        lines = [f"server.{i + 1}={address}:{free_port()}:{free_port()}" for i in range(size)]
        self.members = [ZooKeeperServer(60.0, address, netns, quorum=(i + 1, lines)) for i in range(size)]

    @property
    def hosts(self) -> str:
        return ",".join(m.hosts for m in self.members)

    def start(self) -> None:
        for member in self.members:
            member.launch()
        for member in self.members:
            member.wait()

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def cleanup(self) -> None:
        for member in self.members:
            member.cleanup()

    def leader(self) -> ZooKeeperServer:
        for member in self.members:
            if "Mode: leader" in member.ask("srvr"):
                return member
        raise RuntimeError("no member of the ensemble leads")

    def wait_for_quorum(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any("Mode: leader" in m.ask("srvr") for m in self.members if m.proc is not None):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the ensemble has no leader after {timeout} s")
            time.sleep(0.1)
