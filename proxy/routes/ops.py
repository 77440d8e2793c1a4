"""For operators and probes: ``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``, ``/canary/state``."""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from proxy.audit.writer import AuditWriter
from proxy.metrics import Metrics
from proxy.openapi import document as openapi_document
from proxy.pipeline import Pipeline
from proxy.routes.table import Endpoint
from proxy.state.sync import StateSync
from proxy.upstream import Upstream


class Readiness:
    """``/readyz``: every upstream answers. Cached briefly so probes do not hammer upstreams."""

    def __init__(self, upstreams: Sequence[Upstream], ttl: float) -> None:
        self._upstreams = upstreams
        self._ttl = ttl
        self._checked = -1e9
        self._state: dict[str, bool] = {}

    async def check(self) -> dict[str, bool]:
        if time.monotonic() - self._checked > self._ttl:
            self._state = {u.name: await u.ready() for u in self._upstreams}
            self._checked = time.monotonic()
        return self._state


def routes(
    readiness: Readiness,
    metrics: Metrics,
    sync: StateSync,
    pipeline: Pipeline,
    audit: AuditWriter | None,
    metrics_dir: str | None,
) -> list[Endpoint]:
    openapi_body = JSONResponse(openapi_document()).body  # built once
    exposed = metrics.registry
    if metrics_dir:  # several workers (proxy.workers): expose the sums of every process
        exposed = CollectorRegistry()
        multiprocess.MultiProcessCollector(exposed, path=metrics_dir)  # type: ignore[no-untyped-call]

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        state = await readiness.check()
        ok = bool(state) and all(state.values())
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "upstreams": state}, status_code=200 if ok else 503
        )

    async def scrape(request: Request) -> Response:
        metrics.classification_queue_depth.set(pipeline.pending)
        if audit is not None:
            metrics.audit_queue_depth.set(audit.depth)
        return Response(generate_latest(exposed), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return Response(openapi_body, media_type="application/json")

    async def canary_state(request: Request) -> Response:
        return JSONResponse(sync.state())

    return [
        Endpoint("/healthz", ("GET",), healthz),
        Endpoint("/readyz", ("GET",), readyz),
        Endpoint("/metrics", ("GET",), scrape),
        Endpoint("/openapi.json", ("GET",), openapi),
        Endpoint("/canary/state", ("GET",), canary_state),
    ]
