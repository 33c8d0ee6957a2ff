"""The picture's cost (no root needed): one JSON document, every figure measured in this run.

An API on the embedded store (FastAPI's test client: no network in between) holding T tenants, each a router
and two bridges with P VM ports each (the demo's shape). Measured: how long `GET /ui/topology.svg` takes
(reading the objects and the port statistics, and Graphviz's layout), as a ratio to `GET /v1/ports` of the
same topology, the plain read it is built on, and its size. An admin's whole picture, and a tenant's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from kumo.api import create_app
from kumo.topology.store.sqlite import SqliteStore
from kumo.topology.tokens import create_token


def build(api: TestClient, tenants: int, ports_per_bridge: int, admin: dict[str, str]) -> int:
    """The topology; the number of ports made."""
    made = 0
    for t in range(tenants):
        tenant = f"tenant-{t}"
        router = api.post("/v1/routers", json={"name": f"r{t}", "tenant_id": tenant}, headers=admin).json()
        for b in range(2):
            bridge = api.post("/v1/bridges", json={"name": f"b{t}-{b}", "tenant_id": tenant}, headers=admin).json()
            body = {"device_id": router["id"], "port_address": f"10.{t}.{b}.1", "network_cidr": f"10.{t}.{b}.0/24"}
            rp = api.post("/v1/ports", json=body, headers=admin).json()
            bp = api.post("/v1/ports", json={"device_id": bridge["id"]}, headers=admin).json()
            api.post(f"/v1/ports/{bp['id']}/link", json={"peer_id": rp["id"]}, headers=admin)
            made += 2
            for p in range(ports_per_bridge):
                api.post("/v1/ports", json={"device_id": bridge["id"], "name": f"vm{t}-{b}-{p}"}, headers=admin)
                made += 1
    return made


def timed(api: TestClient, path: str, headers: dict[str, str], runs: int) -> tuple[list[float], int]:
    took, size = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        answer = api.get(path, headers=headers)
        took.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text[:300]
        size = len(answer.content)
    return took, size


def measure(tenants: int, ports_per_bridge: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kumo-ui-bench-") as tmp:
        store = SqliteStore(Path(tmp) / "kumo.db")
        try:
            admin = {"Authorization": f"Bearer {create_token(store, 'admin')[1]}"}
            tenant = {"Authorization": f"Bearer {create_token(store, 'tenant', 'tenant-0')[1]}"}
            with TestClient(create_app(store, auth=True)) as api:
                ports = build(api, tenants, ports_per_bridge, admin)
                listing, _ = timed(api, "/v1/ports", admin, runs)
                drawing, size = timed(api, "/ui/topology.svg", admin, runs)
                one_tenant, tenant_size = timed(api, "/ui/topology.svg", tenant, runs)
        finally:
            store.close()
    median = statistics.median
    return {
        "tenants": tenants,
        "devices": tenants * 3,
        "ports": ports,
        "list_ports_ms": round(median(listing) * 1000, 1),
        "drawing_ms": round(median(drawing) * 1000, 1),
        "drawing_to_list_ratio": round(median(drawing) / median(listing), 1),
        "drawing_kb": round(size / 1024, 1),
        "one_tenant_drawing_ms": round(median(one_tenant) * 1000, 1),
        "one_tenant_drawing_kb": round(tenant_size / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cases = [(1, 3), (10, 4), (50, 4)]  # (the demo's size; 100 ports; 500 ports)
    print(json.dumps({"ui": [measure(t, p, args.runs) for t, p in cases]}, indent=2))


if __name__ == "__main__":
    main()
