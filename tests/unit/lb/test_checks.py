"""Health checks against real servers on loopback: TCP, HTTP and HTTPS answers, and each way to fail."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kumo.lb.checks import Monitor, check
from kumo.lb.health import MemberHealth
from kumo.topology.models import expected_codes

TCP = Monitor("tcp", delay=1, timeout=1, max_retries=2, max_retries_down=3)
HTTP = Monitor("http", 1, 1, 2, 3, "/health", "GET", expected_codes("200-204"))


def serve(answer: bytes | None, tls: ssl.SSLContext | None = None) -> tuple[int, threading.Event]:
    """A loopback server that answers each connection with `answer` after reading a line (None: never)."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def run() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            try:
                if tls is not None:
                    conn = tls.wrap_socket(conn, server_side=True)
                conn.settimeout(3)
                data = conn.recv(4096)
                if answer is not None and data:
                    conn.sendall(answer)
                else:
                    done.wait(2)
            except OSError:
                pass
            conn.close()
        listener.close()

    threading.Thread(target=run, daemon=True).start()
    return listener.getsockname()[1], done


@pytest.fixture
def server() -> Iterator[list[threading.Event]]:
    started: list[threading.Event] = []
    yield started
    for done in started:
        done.set()


def run(monitor: Monitor, port: int) -> tuple[bool, str]:
    return asyncio.run(check(monitor, "127.0.0.1", port))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tcp(server: list[threading.Event]) -> None:
    port, done = serve(b"")
    server.append(done)
    assert run(TCP, port) == (True, "connection accepted")
    assert run(TCP, free_port()) == (False, "connection refused")


def test_http_status_codes(server: list[threading.Event]) -> None:
    for answer, verdict in (
        (b"HTTP/1.1 204 No Content\r\n\r\n", (True, "HTTP 204")),
        (b"HTTP/1.0 500 Oops\r\n\r\n", (False, "HTTP 500, expected 200-204")),
        (b"SSH-2.0-OpenSSH\r\n", (False, "not an HTTP answer: 'SSH-2.0-OpenSSH'")),
    ):
        port, done = serve(answer)
        server.append(done)
        assert run(HTTP, port) == verdict


def test_a_member_that_never_answers_fails_after_the_timeout(server: list[threading.Event]) -> None:
    port, done = serve(None)
    server.append(done)
    assert run(HTTP, port) == (False, "no answer within 1 s")


def test_https_checks_the_answer_not_the_certificate(tmp_path: Path, server: list[threading.Event]) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=member"]
    subprocess.run(
        [*openssl, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    port, done = serve(b"HTTP/1.1 200 OK\r\n\r\n", tls)
    server.append(done)
    https = Monitor("https", 1, 1, 2, 3)
    assert run(https, port) == (True, "HTTP 200")
    plain, done = serve(b"HTTP/1.1 200 OK\r\n\r\n")  # not TLS: the handshake fails
    server.append(done)
    healthy, detail = run(https, plain)
    assert not healthy and detail.startswith("TLS handshake failed"), detail


def test_a_member_goes_down_and_up_as_octavia_counts() -> None:
    health = MemberHealth()  # not judged yet: up
    assert health.observe(False, "connection refused", TCP) and health.status == "up"  # (1 of 3 failures)
    assert not health.observe(False, "connection refused", TCP)
    assert health.observe(False, "connection refused", TCP) and health.status == "down"
    assert not health.observe(True, "connection accepted", TCP)  # 1 of 2 successes: still down, still why
    assert health.detail == "connection refused"
    assert health.observe(True, "connection accepted", TCP) and (health.status, health.detail) == (
        "up",
        "connection accepted",
    )


def test_expected_codes_syntax() -> None:
    assert expected_codes("200") == {200}
    assert expected_codes("200, 202") == {200, 202}
    assert expected_codes("200-204") == set(range(200, 205))
    for bad in ("2xx", "99", "300-200", ""):
        with pytest.raises(ValueError, match="expected_codes"):
            expected_codes(bad)
