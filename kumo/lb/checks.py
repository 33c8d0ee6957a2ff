"""One health check of one member: TCP (a connection is accepted), HTTP or HTTPS (the answer's status code is
one of the expected ones). Run on the checker's event loop, inside its namespace (kumo.lb.checker), so that
the check leaves from the router like a client's connection.

HTTPS checks do not verify the member's certificate (as Octavia's and HAProxy's do not by default): they
check that the service answers, not who it is."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from dataclasses import dataclass

USER_AGENT = "kumo-health-check"
MAX_STATUS_LINE = 1024


@dataclass(frozen=True)
class Monitor:
    """A health monitor's parameters (API.md: health_monitors)."""

    type: str  # tcp, http, https
    delay: float
    timeout: float
    max_retries: int
    max_retries_down: int
    url_path: str = "/"
    http_method: str = "GET"
    expected_codes: frozenset[int] = frozenset({200})


_TLS = ssl.create_default_context()
_TLS.check_hostname = False
_TLS.verify_mode = ssl.CERT_NONE


async def check(monitor: Monitor, address: str, port: int) -> tuple[bool, str]:
    """(healthy, what was found: the detail a member's status shows)."""
    try:
        async with asyncio.timeout(monitor.timeout):
            return await _check(monitor, address, port)
    except TimeoutError:
        return False, f"no answer within {monitor.timeout:g} s"
    except ConnectionRefusedError:
        return False, "connection refused"
    except ssl.SSLError as exc:
        return False, f"TLS handshake failed: {exc.reason or exc}"
    except OSError as exc:  # (asyncio's own message names the address: the errno's says what happened)
        return False, os.strerror(exc.errno) if exc.errno else str(exc)


async def _check(monitor: Monitor, address: str, port: int) -> tuple[bool, str]:
    tls = _TLS if monitor.type == "https" else None
    reader, writer = await asyncio.open_connection(address, port, ssl=tls)
    try:
        if monitor.type == "tcp":
            return True, "connection accepted"
        request = (
            f"{monitor.http_method} {monitor.url_path} HTTP/1.1\r\nHost: {address}:{port}\r\n"
            f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        line = await reader.readline()
        return _verdict(line[:MAX_STATUS_LINE], monitor.expected_codes)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):  # (a member that resets the connection once it answered)
            await writer.wait_closed()


def _verdict(status_line: bytes, expected: frozenset[int]) -> tuple[bool, str]:
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        shown = status_line.strip()[:60].decode(errors="replace") or "nothing"
        return False, f"not an HTTP answer: {shown!r}"
    code = int(parts[1])
    if code in expected:
        return True, f"HTTP {code}"
    return False, f"HTTP {code}, expected {_codes(expected)}"


def _codes(codes: frozenset[int]) -> str:
    ordered = sorted(codes)
    if len(ordered) > 3 and ordered[-1] - ordered[0] == len(ordered) - 1:
        return f"{ordered[0]}-{ordered[-1]}"
    return ",".join(map(str, ordered))
