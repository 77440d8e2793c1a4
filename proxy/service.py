"""The forwarding service: authenticate, validate, route, relay, then hand off to the side channel.

Routes stay thin; this is where a request becomes an upstream call and an answer becomes an
:class:`~proxy.exchange.Exchange` for the :class:`~proxy.pipeline.Pipeline`. Nothing after the
upstream's answer (parsing, classification, metrics, logs) runs before the client has its bytes,
except under strict audit durability, where the response ends only once the pipeline has run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

from proxy.audit.record import audit_headers
from proxy.auth import ClientAuth
from proxy.canary.drift import DriftMonitor
from proxy.errors import (
    AuditUnavailable,
    BadRequest,
    ProxyError,
    ServiceUnavailable,
    StreamInterrupted,
    UpstreamError,
    api_of,
    error_response,
    sse_error_event,
)
from proxy.exchange import ENDPOINTS, Exchange, Outcome
from proxy.logs import logger
from proxy.metrics import NO_UPSTREAM, UNROUTED, Metrics
from proxy.paths import encode
from proxy.pipeline import Pipeline
from proxy.relay import BodyRelay, DisconnectWatch, StreamRelay
from proxy.routing import Route, Router
from proxy.settings import CanarySettings, EdgeSettings
from proxy.upstream import Upstream, UpstreamResponse
from proxy.wire import check_request, parse_json_object, read_body

KEEP_STREAM_BYTES = 8 * 1024 * 1024  # of a stream, what is kept for classification and audit


@dataclass(slots=True)
class _Call:
    """What is known about a request so far, as it moves through :meth:`ProxyService.forward`."""

    request_id: str
    path: str
    method: str
    endpoint: str | None
    started_wall: float
    started: float
    client_key_id: str | None = None
    model: str | None = None
    label: str = UNROUTED
    upstream: str = NO_UPSTREAM
    stream: bool = False
    request: dict | None = None  # type: ignore[type-arg]
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    held: bool = False  # strict durability: the pipeline ran before the response ended


def forwardable(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Request headers as the upstream client takes them, so that they leave byte for byte: aiohttp
    writes header values as UTF-8, so a value is decoded as UTF-8; one that is not UTF-8 (raw
    ISO-8859-1 octets) cannot be relayed unchanged and is refused rather than re-encoded.

    >>> forwardable([(b"X-Note", "café".encode())])
    [('x-note', 'café')]
    """
    out = []
    for k, v in raw:
        try:
            out.append((k.decode("latin-1").lower(), v.decode("utf-8")))
        except UnicodeDecodeError:
            name = k.decode("latin-1")[:64]
            raise BadRequest(f"The value of header {name!r} is not UTF-8; it cannot be relayed unchanged.") from None
    return out


class ProxyService:
    def __init__(
        self,
        router: Router,
        auth: ClientAuth,
        pipeline: Pipeline,
        metrics: Metrics,
        *,
        max_body_bytes: int,
        max_response_bytes: int,
        edge: EdgeSettings | None = None,
        drift: DriftMonitor | None = None,
        canary: CanarySettings | None = None,
        strict: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.strict = strict  # strict audit durability: the pipeline runs before a response may end
        self.clock = clock
        self.drift = drift
        self.canary = canary
        self.router = router
        self.auth = auth
        self.pipeline = pipeline
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_response_bytes = max_response_bytes
        self.edge = edge or EdgeSettings()

    async def forward(self, request: Request, path: str) -> Response:
        """Relay ``request`` (``path`` is relative to ``/v1/``) and return the response to send."""
        call = _Call(
            request_id=request.scope.get("state", {}).get("request_id", ""),
            path=path,
            method=request.method,
            endpoint=ENDPOINTS.get(path) if request.method == "POST" else None,
            started_wall=self.clock(),
            started=time.perf_counter(),
        )
        try:
            return await self._forward(request, call)
        except ProxyError as exc:
            self._done(call, Outcome(status=exc.status_code, body=b"", upstream_wait=0.0, error=exc.message))
            return error_response(exc, api_of("/v1/" + path))

    async def _forward(self, request: Request, call: _Call) -> Response:
        headers = request.headers
        call.client_key_id = self.auth.check_headers(headers)
        edge = self.edge
        body = await read_body(
            request.stream(),
            headers.get("content-length"),
            self.max_body_bytes,
            timeout=edge.body_timeout,
            min_rate=edge.body_min_rate,
        )
        call.body = body
        fwd_headers = forwardable(request.headers.raw)
        call.headers = audit_headers(fwd_headers, edge.max_audit_header_chars)
        route = self._quarantine(self._route(call, body, headers.get("content-type", "")))
        upstream = route.upstream
        call.label, call.upstream = route.label, upstream.name
        up: UpstreamResponse | None = None
        content, waited = b"", 0.0
        async with DisconnectWatch(request.receive) as watch:  # one watcher for headers and body
            try:
                query = request.scope["query_string"].decode("latin-1")  # as sent; no URL object built
                up = await upstream.send(call.method, encode("/" + call.path), body, fwd_headers, query)
            except UpstreamError as exc:
                self.metrics.upstream_error(upstream.name, exc.kind)
                raise
            if up.retried:
                self.metrics.upstream_retries.labels(upstream.name).inc()
            if up.status_code >= 500:
                self.metrics.upstream_error(upstream.name, "status_5xx")
            elif up.status_code == 429:
                self.metrics.upstream_error(upstream.name, "status_4xx")
            streamed = call.stream and up.status_code < 400 and up.content_type.startswith("text/event-stream")
            if not streamed:
                t0 = time.perf_counter()
                try:
                    content = await up.read(self.max_response_bytes)
                except UpstreamError as exc:
                    self.metrics.upstream_error(upstream.name, exc.kind)
                    raise
                finally:
                    await up.aclose()
                waited = up.waited + time.perf_counter() - t0
        if watch.disconnected:  # the client left while we waited
            if up is not None:
                await up.aclose()
            self._done(call, Outcome(status=499, body=content, upstream_wait=waited, disconnected=True))
            return Response(status_code=499)
        assert up is not None
        if streamed:
            broke_off = StreamInterrupted(f"upstream {upstream.name!r} broke off the stream")
            return StreamRelay(
                up,
                keep=KEEP_STREAM_BYTES,
                error_event=sse_error_event(broke_off, call.endpoint),
                endpoint=call.endpoint,
                on_sent=lambda out: self._done(call, out),
                before_end=(lambda out: self._hold(call, out)) if self.strict else None,
            )
        out = Outcome(status=up.status_code, body=content, upstream_wait=waited)
        call.stream = False if up.status_code >= 400 else call.stream
        if self.strict:
            try:
                await self._hold(call, out)
            except Exception as exc:
                raise AuditUnavailable() from exc
        return BodyRelay(up.status_code, up.headers, content, out, lambda o: self._done(call, o))

    def _route(self, call: _Call, body: bytes, content_type: str) -> Route:
        if call.endpoint is not None:
            data = parse_json_object(body)
            call.model, call.stream = check_request(call.endpoint, data)
            call.request = data
            return self.router.resolve(call.model)
        # Pass-through: route by model when the body names one, else to the default upstream.
        if body and "json" in content_type:
            try:
                data = parse_json_object(body)
            except ProxyError:
                data = {}
            model = data.get("model")
            if isinstance(model, str) and model:
                call.model = model
                call.stream = data.get("stream") is True
                return self.router.resolve(model)
        upstream: Upstream | None = self.router.default()
        if upstream is None:
            raise ServiceUnavailable("No upstream is configured.")
        return Route(upstream, UNROUTED)

    def _quarantine(self, route: Route) -> Route:
        """A quarantined model's traffic goes to its fallback upstream, or gets a 503."""
        if self.drift is None or self.canary is None or not self.drift.quarantined(route.label):
            return route
        fallback = self.canary.policy(route.label).fallback_upstream
        upstream = self.router.by_name(fallback) if fallback else None
        if upstream is None:
            raise ServiceUnavailable(
                f"The model `{route.label}` is quarantined: its safety canaries drifted. "
                "An operator must clear it, or it is released once its canaries recover.",
                code="model_quarantined",
            )
        return Route(upstream, route.label)

    def _done(self, call: _Call, out: Outcome) -> None:
        """Record a finished request: metrics now, classification and the log line in the side channel."""
        try:
            duration = time.perf_counter() - call.started
            code = str(out.status)
            self.metrics.requests.labels(call.label, call.upstream, code).inc()
            if call.upstream != NO_UPSTREAM:
                self.metrics.request_duration.labels(
                    call.label, call.upstream, "true" if call.stream else "false"
                ).observe(duration)
                self.metrics.overhead.observe(max(0.0, duration - out.upstream_wait))
            if out.error_kind:
                self.metrics.upstream_error(call.upstream, out.error_kind)
            if not call.held:  # under strict durability the pipeline already ran, before the response ended
                self.pipeline.submit(self._exchange(call, out, duration))
        except Exception:  # monitoring never breaks traffic
            logger.exception("record_failed", request_id=call.request_id)

    def _exchange(self, call: _Call, out: Outcome, duration: float | None = None) -> Exchange:
        return Exchange(
            request_id=call.request_id,
            method=call.method,
            path="/v1/" + call.path,
            endpoint=call.endpoint if call.upstream != NO_UPSTREAM else None,
            model=call.model,
            model_label=call.label,
            upstream=call.upstream,
            traffic="production",
            stream=call.stream,
            status=out.status,
            started=call.started_wall,
            duration=time.perf_counter() - call.started if duration is None else duration,
            upstream_wait=out.upstream_wait,
            client_key_id=call.client_key_id,
            request=call.request,
            request_body=call.body,
            response=out.body,
            response_truncated=out.truncated,
            error=out.error or ("client disconnected" if out.disconnected else None),
            headers=call.headers,
        )

    async def _hold(self, call: _Call, out: Outcome) -> None:
        """Strict durability: the exchange takes the pipeline (judged, audited) before the response may end."""
        call.held = True
        await self.pipeline.run(self._exchange(call, out))
