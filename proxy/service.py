"""The forwarding service: a request becomes an upstream call, its answer a relayed response, and the
whole a :class:`~proxy.handoff.Call` handed to the :class:`~proxy.pipeline.Pipeline`.

:meth:`ProxyService.forward` is its steps, in order: the client's key is checked by the route's
dependency (:class:`~proxy.auth.ClientAuth`); then *read* the body, *validate* what the proxy relies
on, *route* (to the model's upstream; a quarantined model to its fallback, :meth:`Router.serve`),
*trace* (its spans, when tracing is on: :mod:`proxy.telemetry`), *send* to the upstream, and
*relay* the answer, whose relay tells the call's
:class:`~proxy.handoff.Handoff` once the last byte left. Nothing after the upstream's answer
(parsing, classification, metrics, logs) runs before the client has its bytes, except under strict
audit durability, where the response ends only once the pipeline has run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from proxy.audit.record import audit_headers
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
from proxy.exchange import Outcome
from proxy.handoff import Call, Handoff
from proxy.metrics import UNROUTED, Metrics
from proxy.paths import encode
from proxy.pipeline import Pipeline
from proxy.relay import BodyRelay, DisconnectWatch, StreamRelay
from proxy.routing import Route, Router
from proxy.settings import EdgeSettings
from proxy.telemetry import NoTracing, Tracing
from proxy.upstream import Upstream, UpstreamResponse
from proxy.wire import check_request, parse_json_object, read_body

KEEP_STREAM_BYTES = 8 * 1024 * 1024  # of a stream, what is kept for classification and audit


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


@dataclass(slots=True)
class _Answer:
    """What :meth:`ProxyService._send` got: the upstream's response, and its body unless it streams."""

    up: UpstreamResponse | None = None  # None: the client left before the upstream answered
    content: bytes = b""
    waited: float = 0.0
    streamed: bool = False
    client_gone: bool = False


class ProxyService:
    def __init__(
        self,
        router: Router,
        pipeline: Pipeline,
        metrics: Metrics,
        *,
        max_body_bytes: int,
        max_response_bytes: int,
        edge: EdgeSettings | None = None,
        tracing: Tracing | None = None,
        strict: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.strict = strict  # strict audit durability: the pipeline runs before a response may end
        self.clock = clock
        self.router = router
        self.pipeline = pipeline
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_response_bytes = max_response_bytes
        self.edge = edge or EdgeSettings()
        self.tracing = tracing or NoTracing()

    async def forward(self, request: Request, path: str, client_key_id: str | None) -> Response:
        """Relay ``request`` (``path`` is relative to ``/v1/``) and return the response to send."""
        call = self._call(request, path, client_key_id)
        handoff = Handoff(call, self.metrics, self.pipeline, self.strict)
        try:
            headers = await self._read(request, call)
            route = self.router.serve(self._route(call, self._validate(call, request)))
            call.label, call.upstream = route.label, route.upstream.name
            headers = self.tracing.begin(call, headers)  # its spans; the trace context that goes upstream
            answer = await self._send(request, call, route.upstream, headers)
            return await self._relay(call, answer, handoff)
        except ProxyError as exc:
            handoff.sent(Outcome(status=exc.status_code, body=b"", upstream_wait=0.0, error=exc.message))
            return error_response(exc, api_of("/v1/" + path))

    def rejected(self, request: Request, exc: ProxyError) -> None:
        """An error answered on ``/v1/`` before :meth:`forward` ran (the client key, routing): counted and
        handed to the pipeline (audited) as any other request."""
        path = request.scope["path"]
        if path.startswith("/v1/"):
            call = self._call(request, path.removeprefix("/v1/"), None)
            outcome = Outcome(status=exc.status_code, body=b"", upstream_wait=0.0, error=exc.message)
            Handoff(call, self.metrics, self.pipeline).sent(outcome)

    def _call(self, request: Request, path: str, client_key_id: str | None) -> Call:
        rid = request.scope.get("state", {}).get("request_id", "")
        return Call(
            request_id=rid, path=path, method=request.method, started_wall=self.clock(), client_key_id=client_key_id
        )

    async def _read(self, request: Request, call: Call) -> list[tuple[str, str]]:
        """The body (bounded in size and pace), and the headers to forward (those audited go in ``call``)."""
        edge = self.edge
        call.body = await read_body(
            request.stream(),
            request.headers.get("content-length"),
            self.max_body_bytes,
            timeout=edge.body_timeout,
            min_rate=edge.body_min_rate,
        )
        headers = forwardable(request.headers.raw)
        call.headers, call.forwarded = audit_headers(headers, edge.max_audit_header_chars), headers
        return headers

    def _validate(self, call: Call, request: Request) -> str | None:
        """A classified request's body is checked (proxy.wire); a pass-through's may name a model."""
        if call.endpoint is not None:
            data = parse_json_object(call.body)
            call.model, call.stream = check_request(call.endpoint, data)
            call.request = data
            return call.model
        if call.body and "json" in request.headers.get("content-type", ""):
            try:
                data = parse_json_object(call.body)
            except ProxyError:
                return None
            model = data.get("model")
            if isinstance(model, str) and model:
                call.model, call.stream = model, data.get("stream") is True
                return model
        return None

    def _route(self, call: Call, model: str | None) -> Route:
        """The model's upstream; a pass-through that names no model goes to the default upstream."""
        if model is not None:
            return self.router.resolve(model)
        upstream: Upstream | None = self.router.default()
        if upstream is None:
            raise ServiceUnavailable("No upstream is configured.")
        return Route(upstream, UNROUTED)

    async def _send(self, request: Request, call: Call, upstream: Upstream, headers: list[tuple[str, str]]) -> _Answer:
        """The upstream call, watched for the client leaving; a complete answer is read here, a stream later."""
        answer = _Answer()
        async with DisconnectWatch(request.receive) as watch:  # one watcher for headers and body
            try:
                query = request.scope["query_string"].decode("latin-1")  # as sent; no URL object built
                answer.up = up = await upstream.send(call.method, encode("/" + call.path), call.body, headers, query)
            except UpstreamError as exc:
                self.metrics.upstream_error(upstream.name, exc.kind)
                raise
            if up.retried:
                self.metrics.upstream_retries.labels(upstream.name).inc()
            if up.status_code >= 500:
                self.metrics.upstream_error(upstream.name, "status_5xx")
            elif up.status_code == 429:
                self.metrics.upstream_error(upstream.name, "status_4xx")
            answer.streamed = call.stream and up.status_code < 400 and up.content_type.startswith("text/event-stream")
            if not answer.streamed:
                t0 = time.perf_counter()
                try:
                    answer.content = await up.read(self.max_response_bytes)
                except UpstreamError as exc:
                    self.metrics.upstream_error(upstream.name, exc.kind)
                    raise
                finally:
                    await up.aclose()
                answer.waited = up.waited + time.perf_counter() - t0
        answer.client_gone = watch.disconnected
        return answer

    async def _relay(self, call: Call, answer: _Answer, handoff: Handoff) -> Response:
        """The response that relays the answer, and tells ``handoff`` once the client has it."""
        up = answer.up
        if answer.client_gone or up is None:  # the client left while we waited
            if up is not None:
                await up.aclose()
            handoff.sent(Outcome(status=499, body=answer.content, upstream_wait=answer.waited, disconnected=True))
            return Response(status_code=499)
        if answer.streamed:
            broke_off = StreamInterrupted(f"upstream {call.upstream!r} broke off the stream")
            error_event = sse_error_event(broke_off, call.endpoint)
            return StreamRelay(
                up, keep=KEEP_STREAM_BYTES, error_event=error_event, endpoint=call.endpoint, handoff=handoff
            )
        out = Outcome(status=up.status_code, body=answer.content, upstream_wait=answer.waited)
        call.stream = False if up.status_code >= 400 else call.stream
        if self.strict:
            try:
                await handoff.hold(out)
            except Exception as exc:
                raise AuditUnavailable() from exc
        return BodyRelay(up.status_code, up.headers, answer.content, out, handoff)
