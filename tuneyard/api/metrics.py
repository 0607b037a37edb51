"""``GET /metrics`` in Prometheus' text format, and the HTTP latency middleware.

The metrics themselves are described in ``tuneyard.service.metrics``: counters and histograms
are per process (sum their rates over replicas), the gauges are read from the database and
Redis on each scrape (take their ``max`` over replicas).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneyard.api.auth import metrics_access
from tuneyard.service.metrics import Metrics

router = APIRouter()

# Anything else is counted as "other", so a client can't mint label values.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The route label of a request that matched no route (a 404 on an unknown path).
UNMATCHED = "unmatched"


@router.get(
    "/metrics",
    tags=["health"],
    dependencies=[Depends(metrics_access)],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "the metrics"}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics of this API process and of the shared state (trials by study and
    state, workers, stale leases, queue depth), in the text exposition format. Read scope,
    unless the server's ``metrics_public`` setting opens it."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class LatencyMiddleware:
    """Observes each HTTP request's duration, labelled by method, status and the template of
    the route it matched (``/api/v1/studies/{study_id}``, never the raw path), so the number
    of series stays bounded by the number of routes."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless a response starts: an exception escaped the app
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The router records the matched route in the scope it was given (this one).
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.http_seconds.labels(
                method=method, route=route, status=str(status)
            ).observe(time.perf_counter() - start)
