"""API authentication and roles: tokens in the store, 401 without one, 403 for a reader's write, revocation at
once, tenant tokens confined to their tenant; the CLI's token commands; the server's refusal to listen beyond
loopback without tokens."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from kumo.api import create_app
from kumo.cli.main import cli
from kumo.testing.common import free_port
from kumo.topology.store.sqlite import SqliteStore
from kumo.topology.tokens import create_token, revoke_token


@pytest.fixture
def api(store: SqliteStore) -> Iterator[TestClient]:
    with TestClient(create_app(store, auth=True)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token(store: SqliteStore, role: str, tenant: str | None = None) -> dict[str, str]:
    return bearer(create_token(store, role, tenant)[1])


def test_every_route_but_the_health_check_needs_a_token(api: TestClient, store: SqliteStore) -> None:
    assert api.get("/v1/health").json() == {"status": "ok", "auth": True}
    schema = api.get("/openapi.json", headers=token(store, "reader")).json()
    checked = 0
    for path, operations in schema["paths"].items():
        if path == "/v1/health":
            continue
        concrete = path.replace("{", "").replace("}", "")  # (any id: the token is checked first)
        for method in operations:
            answer = api.request(method.upper(), concrete, json={})
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.json()["error"] == "unauthorized" and "kumo token create" in answer.json()["message"]
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            checked += 1
    assert checked > 50
    assert api.get("/openapi.json").status_code == 401
    for wrong in ("Bearer kumo-000000000000-" + "x" * 43, "Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer "):
        assert api.get("/v1/bridges", headers={"Authorization": wrong}).status_code == 401


def test_a_reader_reads_and_traces_but_cannot_write(api: TestClient, store: SqliteStore) -> None:
    admin, reader = token(store, "admin"), token(store, "reader")
    bridge = api.post("/v1/bridges", json={"name": "b1"}, headers=admin).json()
    assert api.get(f"/v1/bridges/{bridge['id']}", headers=reader).status_code == 200
    one = f"/v1/bridges/{bridge['id']}"
    for method, path in (("POST", "/v1/bridges"), ("PATCH", one), ("DELETE", one)):
        answer = api.request(method, path, json={"name": "x"}, headers=reader)
        assert answer.status_code == 403 and answer.json()["error"] == "forbidden", answer.text
    trace = api.post("/v1/traces", json={"ingress_port_id": "nope", "packet": {}}, headers=reader)
    assert trace.status_code != 403  # (a trace writes nothing)


def test_a_revoked_token_stops_working_at_once(api: TestClient, store: SqliteStore) -> None:
    row, secret = create_token(store, "admin")
    assert api.get("/v1/bridges", headers=bearer(secret)).status_code == 200
    revoke_token(store, row["id"])
    assert api.get("/v1/bridges", headers=bearer(secret)).status_code == 401


def test_a_tenant_token_sees_and_changes_only_its_tenants_objects(api: TestClient, store: SqliteStore) -> None:
    red, blue, admin = token(store, "tenant", "red"), token(store, "tenant", "blue"), token(store, "admin")
    mine = api.post("/v1/bridges", json={"name": "red-net"}, headers=red).json()
    assert mine["tenant_id"] == "red"
    theirs = api.post("/v1/bridges", json={"name": "blue-net"}, headers=blue).json()
    assert [b["name"] for b in api.get("/v1/bridges", headers=red).json()] == ["red-net"]
    assert {b["name"] for b in api.get("/v1/bridges", headers=admin).json()} == {"red-net", "blue-net"}
    assert api.get(f"/v1/bridges/{theirs['id']}", headers=red).status_code == 404
    assert api.patch(f"/v1/bridges/{theirs['id']}", json={"name": "x"}, headers=red).status_code == 404
    assert api.delete(f"/v1/bridges/{theirs['id']}", headers=red).status_code == 404
    # what hangs off another tenant's objects is not there either, nor can it be named
    port = api.post("/v1/ports", json={"device_id": theirs["id"]}, headers=blue).json()
    assert api.get(f"/v1/ports/{port['id']}", headers=red).status_code == 404
    refused = api.post("/v1/ports", json={"device_id": theirs["id"]}, headers=red)
    assert refused.status_code == 404 and refused.json()["error"] == "unknown_reference", refused.text
    chain = api.post("/v1/chains", json={"name": "blue-fw"}, headers=blue).json()
    own_port = api.post("/v1/ports", json={"device_id": mine["id"]}, headers=red).json()
    filtered = api.patch(f"/v1/ports/{own_port['id']}", json={"inbound_filter_id": chain["id"]}, headers=red)
    assert filtered.status_code == 404, filtered.text
    assert api.post("/v1/bridges", json={"tenant_id": "blue"}, headers=red).status_code == 403
    # the operator's objects: hosts, tunnel zones, bindings
    assert api.get("/v1/hosts", headers=red).status_code == 403
    binding = {"host_id": "h1", "interface_name": "tap1"}
    assert api.put(f"/v1/ports/{own_port['id']}/binding", json=binding, headers=red).status_code == 403
    assert api.put(f"/v1/ports/{own_port['id']}/binding", json=binding, headers=admin).status_code == 200


def run_cli(*args: str, env: dict[str, Any] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env=env)


def test_tokens_are_made_listed_and_revoked_with_the_cli(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'kumo.db'}"
    made = run_cli("token", "create", "--store", url, "--role", "reader", "--name", "grafana")
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip().splitlines()[0]
    assert secret.startswith("kumo-")
    listed = run_cli("token", "list", "--store", url, "--json")
    assert secret not in listed.output and "grafana" in listed.output
    token_id = secret.split("-")[1]
    assert run_cli("token", "revoke", "--store", url, token_id).exit_code == 0
    assert run_cli("token", "revoke", "--store", url, token_id).exit_code != 0
    bad = run_cli("token", "create", "--store", url, "--role", "tenant")
    assert bad.exit_code != 0


LISTEN = ("--listen", "0.0.0.0:18555")


def test_the_api_refuses_to_listen_beyond_loopback_without_tokens(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kumo.cli.main", "api", "--store", f"sqlite://{tmp_path / 'kumo.db'}", *LISTEN],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "kumo token create" in done.stderr and "--insecure-no-auth" in done.stderr, done.stderr


def test_a_tenant_builds_a_load_balancer_with_its_own_monitor(api: TestClient, store: SqliteStore) -> None:
    red, blue = token(store, "tenant", "red"), token(store, "tenant", "blue")
    router = api.post("/v1/routers", json={}, headers=red).json()
    balancer = api.post("/v1/load_balancers", json={"router_id": router["id"]}, headers=red).json()
    theirs = api.post("/v1/health_monitors", json={}, headers=blue).json()
    mine = api.post("/v1/health_monitors", json={}, headers=red).json()
    pool = {"load_balancer_id": balancer["id"], "health_monitor_id": theirs["id"]}
    assert api.post("/v1/pools", json=pool, headers=red).status_code == 404
    assert api.post("/v1/pools", json={**pool, "health_monitor_id": mine["id"]}, headers=red).status_code == 201
    assert api.get("/v1/pools", headers=blue).json() == []


def test_the_api_over_tls_with_a_token_end_to_end(tmp_path: Path) -> None:
    """`kumo api --tls-cert --tls-key --auth`, and the CLI with KUMO_API=https://..., KUMO_CA_FILE, KUMO_TOKEN."""
    cert, key = tmp_path / "api.pem", tmp_path / "api.key"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=kumo-api"]
    san = ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run([*openssl, *san, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    url = f"sqlite://{tmp_path / 'kumo.db'}"
    with SqliteStore(tmp_path / "kumo.db") as store:
        _, secret = create_token(store, "admin")
    port = free_port()
    tls = ["--tls-cert", str(cert), "--tls-key", str(key)]
    listen = ["--listen", f"127.0.0.1:{port}", "--auth"]
    server = subprocess.Popen(
        [sys.executable, "-m", "kumo.cli.main", "api", "--store", url, *listen, *tls],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        api = f"https://127.0.0.1:{port}"
        assert until_up(api, cert), server.stderr.read() if server.poll() is not None else "no answer"
        env = {**os.environ, "KUMO_API": api, "KUMO_CA_FILE": str(cert), "KUMO_TOKEN": secret}
        cli_run = [sys.executable, "-m", "kumo.cli.main", "bridge", "create", "--name", "over-tls"]
        made = subprocess.run(cli_run, env=env, capture_output=True, text=True, timeout=30)
        assert made.returncode == 0, made.stderr
        no_token = {k: v for k, v in env.items() if k != "KUMO_TOKEN"}
        refused = subprocess.run(cli_run, env=no_token, capture_output=True, text=True, timeout=30)
        assert refused.returncode == 1 and "needs a token" in refused.stderr, refused.stderr
        no_ca = {k: v for k, v in env.items() if k != "KUMO_CA_FILE"}
        untrusted = subprocess.run(cli_run, env=no_ca, capture_output=True, text=True, timeout=30)
        assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr, untrusted.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)


def until_up(url: str, ca: Path, within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            trusted = ssl.create_default_context(cafile=str(ca))
            if httpx.get(f"{url}/v1/health", verify=trusted, timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            time.sleep(0.2)
    return False
