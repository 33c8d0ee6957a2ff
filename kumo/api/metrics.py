"""The API server's Prometheus metrics (`GET /metrics`, behind the API's authentication when it has some):
requests by route (the path template, never an id), method and status, and their latency."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # (no `_created` series)


class RequestMetrics:
    """ASGI middleware counting each HTTP request once it is answered."""

    def __init__(self, app: Any, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "kumo_api_requests", "API requests answered.", ["route", "method", "status"], registry=registry
        )
        self.latency = Histogram(
            "kumo_api_request_seconds",
            "API requests: received -> answered.",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = [500]

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")  # (the template: /v1/bridges/{id})
            self.requests.labels(route, scope["method"], str(status[0])).inc()
            self.latency.labels(route, scope["method"]).observe(time.monotonic() - started)


def add_metrics(app: FastAPI) -> CollectorRegistry:
    registry = CollectorRegistry()
    app.add_middleware(RequestMetrics, registry=registry)

    @app.get("/metrics", tags=["meta"], summary="Prometheus metrics of this API server", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return registry
