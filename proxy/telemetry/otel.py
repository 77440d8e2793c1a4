"""OpenTelemetry GenAI spans of the proxy's exchanges (see :mod:`proxy.telemetry`); the ``otel`` extra.

The proxy's own ``TracerProvider`` (never the global one: an app embedding the proxy keeps its own),
a ``BatchSpanProcessor`` in front of the OTLP exporter (HTTP/protobuf or gRPC), parent-based sampling
at ``otel.sample_ratio``. Spans are started with the request and ended, with explicit end times
(the last byte), once the pipeline has judged the answer, so the evaluation events sit on the span
they evaluate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from proxy.canary.transition import Transition
from proxy.exchange import Exchange
from proxy.extract import answers_from_body, answers_from_stream
from proxy.facts import facts
from proxy.handoff import Call
from proxy.logs import logger
from proxy.metrics import Metrics
from proxy.settings import OtelSettings
from proxy.telemetry import semconv as sc
from proxy.version import version

TRACE_HEADERS = ("traceparent", "tracestate")
LOG_EVERY = 60.0  # seconds between two log lines about failed exports
PAUSE = 10.0  # seconds after a failed export during which batches are dropped, not tried


class CountingExporter(SpanExporter):
    """The OTLP exporter, with its failures counted and logged at most once a minute; after a failed
    export, batches are dropped (counted) for ``PAUSE`` seconds rather than tried: each try encodes the
    batch (with the GIL held) and keeps the queue full while the exporter retries, which cost requests
    on a down collector more than a working one costs them (docs/tracing.md)."""

    def __init__(self, inner: SpanExporter, metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.metrics = metrics
        self.clock = clock
        self._logged = -LOG_EVERY
        self._paused_until = -PAUSE

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.clock() < self._paused_until:
            self.metrics.trace_export_failures.inc(len(spans))
            return SpanExportResult.FAILURE
        try:
            result = self.inner.export(spans)
        except Exception:  # the exporter's own bug or a transport it did not map: counted like a failure
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.metrics.trace_export_failures.inc(len(spans))
            self._paused_until = self.clock() + PAUSE
            if self.clock() - self._logged >= LOG_EVERY:
                self._logged = self.clock()
                logger.warning("trace_export_failed", spans=len(spans), paused_seconds=PAUSE)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def exporter(settings: OtelSettings) -> SpanExporter:
    endpoint = str(settings.endpoint)
    raw = settings.headers() or ""
    headers = dict(kv.strip().split("=", 1) for kv in raw.split(",") if "=" in kv) or None
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        insecure = endpoint.startswith("http://")
        return GrpcExporter(endpoint=endpoint.split("://", 1)[-1], insecure=insecure, headers=headers, timeout=5)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    url = endpoint if endpoint.rstrip("/").endswith("/v1/traces") else endpoint.rstrip("/") + "/v1/traces"
    return OTLPSpanExporter(endpoint=url, headers=headers, timeout=5)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class OtelTracing:
    enabled = True

    def __init__(self, settings: OtelSettings, metrics: Metrics, *, privacy: str = "full") -> None:
        resource = Resource.create({"service.name": settings.service_name, "service.version": version()})
        self.provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)))
        self.provider.add_span_processor(BatchSpanProcessor(CountingExporter(exporter(settings), metrics)))
        self.tracer = self.provider.get_tracer("refusal-guard", version(), schema_url=sc.SCHEMA_URL)
        self.propagator = TraceContextTextMapPropagator()
        self.deprecated = not settings.latest()  # gen_ai.system beside gen_ai.provider.name
        self.content = settings.capture_content and privacy == "full"  # never more than the audit keeps

    # -- at request time -------------------------------------------------------------------------

    def begin(self, call: Call, headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        try:
            return self._begin(call, headers)
        except Exception:  # tracing never breaks traffic: the request goes on untraced
            logger.exception("trace_begin_failed", request_id=call.request_id)
            call.trace = None
            return list(headers)

    def _begin(self, call: Call, headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        carrier = {k: v for k, v in headers if k in TRACE_HEADERS}
        parent = self.propagator.extract(carrier) if carrier else Context()
        route = f"/v1/{call.path}" if call.endpoint else "/v1/{path}"
        server = self.tracer.start_span(
            f"{call.method} {route}",
            context=parent,
            kind=SpanKind.SERVER,
            start_time=_ns(call.started_wall),
            attributes={sc.HTTP_METHOD: call.method, sc.HTTP_ROUTE: route, sc.URL_PATH: f"/v1/{call.path}"},
        )
        client = self.tracer.start_span(
            self._name(call.endpoint, call.model),
            context=trace.set_span_in_context(server),
            kind=SpanKind.CLIENT,
            attributes=self._request_attributes(call.endpoint, call.model, call.request, call.upstream, call.stream),
        )
        call.trace = (server, client)
        if "traceparent" not in carrier:  # never add a header the client did not send
            return list(headers)
        injected: dict[str, str] = {}
        self.propagator.inject(injected, context=trace.set_span_in_context(client))
        return [(k, injected.get(k, v)) if k in TRACE_HEADERS else (k, v) for k, v in headers]

    # -- once the answer is judged (a pipeline stage) ------------------------------------------------

    def finish(self, ex: Exchange) -> None:
        end = _ns(ex.started + ex.duration)
        if ex.traffic == "canary":
            attributes = self._request_attributes(ex.endpoint, ex.model, ex.request, ex.upstream, ex.stream)
            attributes[sc.TRAFFIC] = "canary"
            attributes[sc.CANARY_SUITE] = (ex.canary or {}).get("suite", "")
            span = self.tracer.start_span(
                self._name(ex.endpoint, ex.model),
                context=Context(),  # a trace of its own
                kind=SpanKind.CLIENT,
                start_time=_ns(ex.started),
                attributes=attributes,
            )
            self._answered(span, ex, end)
            return
        handle = ex.trace
        if handle is None:  # refused before it was routed: a server span alone
            server = self.tracer.start_span(
                ex.method, context=Context(), kind=SpanKind.SERVER, start_time=_ns(ex.started),
                attributes={sc.HTTP_METHOD: ex.method, sc.URL_PATH: ex.path},
            )  # fmt: skip
        else:
            server, client = handle
            self._answered(client, ex, end)
        server.set_attribute(sc.HTTP_STATUS, ex.status)
        if ex.status >= 500:
            server.set_status(Status(StatusCode.ERROR))
        server.end(end_time=end)

    def transition(self, t: Transition) -> None:
        at = _ns(t.at)
        span = self.tracer.start_span(
            f"drift {t.event}",
            context=Context(),
            kind=SpanKind.INTERNAL,
            start_time=at,
            attributes={
                sc.TRANSITION: t.event,
                sc.MODEL: t.model,
                sc.SUITE: t.suite or "",
                "refusal_guard.drift.detail": orjson.dumps(t.detail, default=str).decode(),
            },
        )
        span.end(end_time=at)

    def shutdown(self) -> None:
        self.provider.shutdown()  # flushes what is queued, within the exporter's timeout

    # -- the pieces ----------------------------------------------------------------------------------

    @staticmethod
    def _name(endpoint: str | None, model: str | None) -> str:
        return f"{sc.OPERATIONS.get(endpoint or '', 'chat')} {model or ''}".strip()

    def _request_attributes(
        self,
        endpoint: str | None,
        model: str | None,
        request: dict[str, Any] | None,
        upstream: str,
        stream: bool,
    ) -> dict[str, Any]:
        body = request or {}
        provider = sc.PROVIDERS.get(endpoint or "", "openai")
        out: dict[str, Any] = {
            sc.OPERATION: sc.OPERATIONS.get(endpoint or "", "chat"),
            sc.PROVIDER: provider,
            sc.UPSTREAM: upstream,
            sc.STREAM: bool(stream),
            sc.TRAFFIC: "production",
        }
        if self.deprecated:
            out[sc.SYSTEM_DEPRECATED] = provider
        if model:
            out[sc.REQUEST_MODEL] = model
        for name, key in (
            (sc.REQUEST_MAX_TOKENS, "max_tokens"),
            (sc.REQUEST_TEMPERATURE, "temperature"),
            (sc.REQUEST_TOP_P, "top_p"),
            (sc.REQUEST_SEED, "seed"),
            (sc.REQUEST_CHOICE_COUNT, "n"),
        ):
            value = body.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[name] = value
        if self.content and isinstance(body.get("messages"), list):
            out[sc.INPUT_MESSAGES] = orjson.dumps(body["messages"]).decode()[:100_000]
        return out

    def _answered(self, span: Span, ex: Exchange, end: int) -> None:
        """The inference span's response attributes and evaluations, then its end at the last byte."""
        summary = response_summary(ex)
        for key, value in summary.items():
            span.set_attribute(key, value)
        if ex.first_chunk is not None:
            span.set_attribute(sc.TIME_TO_FIRST_CHUNK, round(ex.first_chunk * 1000, 3))
            span.add_event(sc.FIRST_CHUNK_EVENT, timestamp=_ns(ex.started + ex.first_chunk))
        for i, v in enumerate(ex.verdicts):
            attributes: dict[str, Any] = {
                sc.EVALUATION_NAME: "refusal",
                sc.EVALUATION_SCORE_LABEL: v.label,
                sc.EVALUATION_SCORE_VALUE: float(v.score),
                sc.EVALUATION_EXPLANATION: f"{v.detector} {v.version}",
                sc.DETECTOR: v.detector,
                sc.DETECTOR_VERSION: v.version,
                sc.CHOICE_INDEX: i,
            }
            if sc.RESPONSE_ID in summary:
                attributes[sc.RESPONSE_ID] = summary[sc.RESPONSE_ID]
            span.add_event(sc.EVALUATION_EVENT, attributes, timestamp=end)
        if ex.harmful is not None:
            name, version = ex.harm_by or ("", "")
            span.add_event(
                sc.EVALUATION_EVENT,
                {
                    sc.EVALUATION_NAME: "harmful_request",
                    sc.EVALUATION_SCORE_LABEL: "harmful" if ex.harmful else "not_harmful",
                    sc.EVALUATION_SCORE_VALUE: float(ex.harm_score or 0.0),
                    sc.EVALUATION_EXPLANATION: f"{name} {version}",
                },
                timestamp=end,
            )
        if self.content:
            texts = _answers(ex)
            if texts:
                span.set_attribute(sc.OUTPUT_MESSAGES, orjson.dumps(texts).decode()[:100_000])
        if ex.status >= 400 or ex.error:
            span.set_attribute(sc.ERROR_TYPE, str(ex.status) if ex.status >= 400 else "stream_interrupted")
            span.set_status(Status(StatusCode.ERROR, (ex.error or "")[:200]))
        span.end(end_time=end)


def _answers(ex: Exchange) -> list[str]:
    try:
        answers = (answers_from_stream if ex.stream else answers_from_body)(ex.endpoint or "chat", ex.response)
    except orjson.JSONDecodeError:
        return []
    return [a.text for a in answers]


def response_summary(ex: Exchange) -> dict[str, Any]:
    """``gen_ai.response.*`` and ``gen_ai.usage.*`` from the answer (:func:`proxy.facts.facts`)."""
    if not ex.response or ex.status >= 400:
        return {}
    f = facts(ex.response, ex.stream)
    named = {
        sc.RESPONSE_ID: f.id,
        sc.RESPONSE_MODEL: f.model,
        sc.USAGE_INPUT: f.input_tokens,
        sc.USAGE_OUTPUT: f.output_tokens,
        sc.RESPONSE_FINISH_REASONS: tuple(f.finish_reasons) or None,
    }
    return {k: v for k, v in named.items() if v is not None}
