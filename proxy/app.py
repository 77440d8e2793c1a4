"""The ASGI application: ``create_app(settings)`` wires upstreams, detector, metrics and routes.

Dependencies are injected with production defaults, so tests pass their own registry, detector
or upstreams; clients are built in the lifespan, not at import.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import httpx
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from detectors import Detector, load_detector
from proxy.audit.writer import AuditWriter
from proxy.auth import ClientAuth
from proxy.canary.drift import DriftMonitor
from proxy.canary.notify import Notifier
from proxy.canary.production import ProductionShift
from proxy.canary.scheduler import CanaryScheduler, TrafficShape
from proxy.canary.suites import load_suites
from proxy.classify import CLASSIFIED_ENDPOINTS, SideChannel
from proxy.errors import MethodNotAllowed, ModelNotFound, NotFound, ProxyError
from proxy.logs import logger
from proxy.metrics import Metrics
from proxy.middleware import RequestIdMiddleware, RequestIds
from proxy.openapi import document as openapi_document
from proxy.routing import Router
from proxy.service import ProxyService, error_response
from proxy.settings import ClientKey, Settings
from proxy.upstream import OpenAIUpstream, Upstream


def build_upstream(config) -> Upstream:  # type: ignore[no-untyped-def]
    """An upstream client for one config entry; litellm is imported only for ``provider: litellm``."""
    if config.provider == "litellm":
        from proxy.litellm_upstream import LiteLLMUpstream

        return LiteLLMUpstream(config)
    return OpenAIUpstream(config, api_key=config.api_key())


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


class GuardApp(FastAPI):
    """FastAPI for everything but the three classified POST endpoints, which skip its middleware stack
    (seven layers cost about as much as the relay itself): they go straight to the service, with the
    same request id and the same error envelope."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hot_paths: dict[str, str] = {}
        self._ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = self.hot_paths.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if path is None:
            await super().__call__(scope, receive, send)
            return
        send = self._ids.tag(scope, send)
        try:
            response = await self.state.service.forward(Request(scope, receive), path)
        except Exception:  # what FastAPI's catch-all handler does for the other routes
            response = internal_error(scope["path"])
        await response(scope, receive, send)


def internal_error(path: str) -> Response:
    """A bug of ours: logged with its traceback, answered in the envelope, never with details."""
    logger.exception("unhandled_error", path=path)
    return error_response(ProxyError("The proxy failed to handle this request.", code="internal_error"))


def create_app(
    settings: Settings,
    *,
    upstreams: Sequence[Upstream] | None = None,
    detector: Detector | None = None,
    registry: CollectorRegistry | None = None,
    role: Literal["proxy", "canary-runner"] = "proxy",
) -> FastAPI:
    """Build the proxy app.

    >>> app = create_app(Settings(upstreams=[{"name": "u", "base_url": "http://127.0.0.1:9/v1"}]))
    >>> app.title
    'refusal-guard'
    """
    registry = registry if registry is not None else CollectorRegistry()
    metrics = Metrics(registry)
    exposed = registry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # several workers (proxy.workers): expose their sums
        exposed = CollectorRegistry()
        multiprocess.MultiProcessCollector(exposed)  # type: ignore[no-untyped-call]
    ups = list(upstreams) if upstreams is not None else [build_upstream(c) for c in settings.upstreams]
    router = Router(ups)
    metrics.known_upstreams(u.name for u in ups)
    side = SideChannel(
        detector if detector is not None else load_detector(settings.detector),
        metrics,
        queue_size=settings.classify_queue_size,
        batch_size=settings.classify_batch_size,
    )
    canary = settings.canary
    notifier = Notifier(metrics, alertmanager_url=canary.alertmanager_url, webhook_url=canary.webhook_url)
    drift = DriftMonitor(canary, metrics, notifier)
    audit = AuditWriter(settings.audit, metrics) if settings.audit.enabled else None
    if audit is not None:
        side.listeners.append(lambda ex: None if ex.audited else audit.submit(ex))
        drift.listeners.append(
            lambda t: audit.event(
                "drift_transition", {"transition": t.event, "model": t.model, "suite": t.suite, **t.detail}
            )
        )
    shape = TrafficShape()
    shift = ProductionShift(metrics)
    side.listeners += [shape.observe, shift.observe]
    service = ProxyService(
        router,
        ClientAuth(settings.client_keys),
        side,
        metrics,
        max_body_bytes=settings.max_body_bytes,
        max_response_bytes=settings.max_response_bytes,
        drift=drift,
        canary=canary,
        audit=audit,
        strict=settings.audit.durability == "strict",
    )
    readiness = Readiness(ups, settings.readiness_cache_seconds)
    runs_canaries = canary.enabled and (role == "canary-runner" or not canary.runner_url)
    scheduler = (
        CanaryScheduler(canary, load_suites(canary.suites, canary.extra_suites), router, side, drift, metrics, shape)
        if runs_canaries
        else None
    )
    admin = ClientAuth([ClientKey(id="admin", sha256=settings.admin_key_sha256)] if settings.admin_key_sha256 else [])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if audit is not None:
            audit.start()
        side.start()
        await _model_list(ups, router)  # learn the upstreams' own model names for metric labels
        follower = None
        if scheduler is not None:
            scheduler.start()
        elif canary.enabled and canary.runner_url:
            follower = asyncio.get_running_loop().create_task(
                _follow(canary.runner_url, drift, canary.interval_seconds)
            )
        # Everything loaded so far (detector vocabulary, suites, modules) lives as long as the process:
        # move it out of the collector's reach, or each full collection walks it (~40 ms here, a p99 stall).
        gc.collect()
        gc.freeze()
        logger.info(
            "started",
            role=role,
            upstreams=[u.name for u in ups],
            detector=side.detector.name,
            detector_version=side.detector.version,
            canaries=scheduler is not None,
        )
        try:
            yield
        finally:
            if scheduler is not None:
                await scheduler.stop()
            if follower is not None:
                follower.cancel()
            await side.stop()
            await notifier.aclose()
            if audit is not None:
                await asyncio.to_thread(audit.stop)
            for u in ups:
                await u.aclose()
            if exposed is not registry:
                multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
            logger.info("stopped")

    app = GuardApp(title="refusal-guard", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    if role == "proxy":
        app.hot_paths = {f"/v1/{path}": path for path in CLASSIFIED_ENDPOINTS}
    app.state.service = service
    app.state.side = side
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.drift = drift
    app.state.scheduler = scheduler
    app.state.shift = shift
    app.state.audit = audit

    @app.exception_handler(ProxyError)
    async def _proxy_error(request: Request, exc: ProxyError) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            return error_response(MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}."))
        return error_response(NotFound(f"No route for {request.url.path}."))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return internal_error(request.url.path)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        state = await readiness.check()
        ok = bool(state) and all(state.values())
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "upstreams": state}, status_code=200 if ok else 503
        )

    async def metrics_endpoint(request: Request) -> Response:
        metrics.classification_queue_depth.set(side.pending)
        if audit is not None:
            metrics.audit_queue_depth.set(audit.depth)
        return Response(generate_latest(exposed), media_type=CONTENT_TYPE_LATEST)

    async def list_models(request: Request) -> Response:
        service.auth.check(request.headers.get("authorization"), request.headers.get("api-key"))
        return JSONResponse({"object": "list", "data": await _model_list(ups, router)})

    async def get_model(request: Request) -> Response:
        service.auth.check(request.headers.get("authorization"), request.headers.get("api-key"))
        model_id = request.path_params["model"]
        for m in await _model_list(ups, router):
            if m["id"] == model_id:
                return JSONResponse(m)
        raise ModelNotFound(f"The model `{model_id[:200]}` does not exist or is not served here.", param="model")

    openapi_body = JSONResponse(openapi_document()).body  # built once

    async def openapi(request: Request) -> Response:
        return Response(openapi_body, media_type="application/json")

    async def canary_state(request: Request) -> Response:
        return JSONResponse(drift.state())

    def check_admin(request: Request) -> None:
        if not admin.enabled:
            raise NotFound("Admin endpoints are off: set admin_key_sha256 in the config.")
        admin.check(request.headers.get("authorization"), request.headers.get("api-key"))

    async def clear_quarantine(request: Request) -> Response:
        check_admin(request)
        model = request.path_params["model"]
        released = drift.release(model, by="operator")
        return JSONResponse({"model": model, "released": released, "state": drift.state()["models"].get(model)})

    async def set_quarantine(request: Request) -> Response:
        check_admin(request)
        model = request.path_params["model"]
        if model not in router.models() and model not in canary.models:
            raise ModelNotFound(f"The model `{model[:200]}` is not configured.", param="model")
        drift.quarantine(model, "operator")
        return JSONResponse({"model": model, "quarantined": True})

    def proxied(path: str):  # type: ignore[no-untyped-def]
        async def endpoint(request: Request) -> Response:
            return await service.forward(request, path)

        return endpoint

    async def passthrough(request: Request) -> Response:
        path = request.path_params["path"]
        if path in CLASSIFIED_ENDPOINTS:  # POST is routed above; nothing else is allowed there
            raise MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}.")
        return await service.forward(request, path)

    add = app.router.add_route
    add("/healthz", healthz, methods=["GET"])
    add("/readyz", readyz, methods=["GET"])
    add("/metrics", metrics_endpoint, methods=["GET"])
    add("/openapi.json", openapi, methods=["GET"])
    add("/canary/state", canary_state, methods=["GET"])
    add("/admin/quarantine/{model:path}/clear", clear_quarantine, methods=["POST"])
    add("/admin/quarantine/{model:path}", set_quarantine, methods=["POST"])
    if role == "canary-runner":  # canaries and state only; no client traffic
        app.add_middleware(RequestIdMiddleware)
        return app
    add("/v1/models", list_models, methods=["GET"])
    add("/v1/models/{model:path}", get_model, methods=["GET"])
    for path in ("chat/completions", "completions", "responses"):
        add(f"/v1/{path}", proxied(path), methods=["POST"])
    add("/v1/{path:path}", passthrough, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    app.add_middleware(RequestIdMiddleware)
    return app


async def _follow(runner_url: str, drift: DriftMonitor, every: float) -> None:
    """A fleet proxy: poll the canary-runner's state and adopt its quarantine decisions."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        while True:
            try:
                r = await client.get(runner_url.rstrip("/") + "/canary/state")
                r.raise_for_status()
                drift.follow(r.json())
            except (httpx.HTTPError, ValueError) as exc:
                logger.warning("canary_runner_unreachable", error=type(exc).__name__)
            await asyncio.sleep(max(1.0, every / 2))


async def _model_list(ups: Sequence[Upstream], router: Router) -> list[dict[str, object]]:
    """Configured model names; for upstreams configured with globs, the upstream's own models that match.

    What an upstream lists is also taught to the router, which then labels metrics by those names.
    """
    seen: dict[str, dict[str, object]] = {}
    for u in ups:
        exact = [m for m in u.config.models if not any(c in m for c in "*?[")]
        for m in exact:
            seen.setdefault(m, {"id": m, "object": "model", "created": 0, "owned_by": u.name})
        if len(exact) < len(u.config.models) and isinstance(u, OpenAIUpstream):
            listed = await u.list_models()
            router.learn(u.name, (str(m["id"]) for m in listed if u.config.serves(str(m["id"]))))
            for item in listed:
                mid = str(item["id"])
                if u.config.serves(mid):
                    seen.setdefault(
                        mid,
                        {
                            "id": mid,
                            "object": "model",
                            "created": item.get("created", 0),
                            "owned_by": item.get("owned_by", u.name),
                        },
                    )
    return list(seen.values())
