"""For operators and probes: ``/healthz``, ``/readyz``, ``/metrics``, ``/canary/state`` (``/openapi.json`` is
FastAPI's, :mod:`proxy.web`)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from starlette.responses import JSONResponse, Response

from proxy.audit.writer import AuditWriter
from proxy.disposition import DispositionWatch
from proxy.fingerprint import ModelFingerprint
from proxy.metrics import Metrics
from proxy.pipeline import Pipeline
from proxy.state.sync import StateSync
from proxy.upstream import Upstream
from proxy.web import add_get


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


def router(
    readiness: Readiness,
    metrics: Metrics,
    sync: StateSync,
    pipeline: Pipeline,
    audit: AuditWriter | None,
    metrics_dir: str | None,
    fingerprint: ModelFingerprint,
    disposition: DispositionWatch,
) -> APIRouter:
    api = APIRouter(tags=["operations"])
    exposed = metrics.registry
    if metrics_dir:  # several workers (proxy.workers): expose the sums of every process
        exposed = CollectorRegistry()
        multiprocess.MultiProcessCollector(exposed, path=metrics_dir)  # type: ignore[no-untyped-call]

    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    add_get(api, "/healthz", healthz, summary="Liveness: the process answers")

    async def readyz() -> Response:
        state = await readiness.check()
        ok = bool(state) and all(state.values())
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "upstreams": state}, status_code=200 if ok else 503
        )

    add_get(api, "/readyz", readyz, summary="Readiness: every upstream answers (503 if not)")

    async def scrape() -> Response:
        metrics.classification_queue_depth.set(pipeline.pending)
        if audit is not None:
            metrics.audit_queue_depth.set(audit.depth)
        return Response(generate_latest(exposed), media_type=CONTENT_TYPE_LATEST)

    add_get(api, "/metrics", scrape, summary="Prometheus metrics (every worker's, summed)")

    async def canary_state() -> Response:
        return JSONResponse({**sync.state(), "fingerprint": fingerprint.state(), "disposition": disposition.state()})

    add_get(api, "/canary/state", canary_state, summary="Each model's canary, drift, fingerprint and disposition state")

    return api
