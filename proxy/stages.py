"""The pipeline's own stages: count verdicts, write the request's log line, audit the exchange.

The other stages live with what they feed: :class:`proxy.canary.shape.TrafficShape` (what canaries
copy), :class:`proxy.shift.ProductionShift` (the production refusal-rate test) and
:class:`proxy.canary.feedback.CanaryFeedback` (canary verdicts into the drift monitor).
"""

from __future__ import annotations

from concurrent.futures import Future

from proxy.audit.writer import AuditWriter
from proxy.catalog import ModelCatalog
from proxy.exchange import Exchange
from proxy.logs import logger
from proxy.metrics import Metrics
from proxy.settings import is_glob
from proxy.telemetry import Tracing


class LearnModelNames:
    """Names that carry production traffic under a glob become labels and canary targets (bounded:
    :class:`proxy.catalog.ModelCatalog`). The exchange that admits a name is already counted, shaped
    and audited under it (the stages after this one see the new label)."""

    def __init__(self, catalog: ModelCatalog, metrics: Metrics) -> None:
        self.catalog = catalog
        self.metrics = metrics

    def __call__(self, ex: Exchange) -> None:
        if ex.traffic != "production" or ex.status >= 400 or not ex.model or not is_glob(ex.model_label):
            return
        admitted = self.catalog.observe(ex.upstream, ex.model)
        if admitted:
            ex.model_label = ex.model
        elif admitted is False:
            self.metrics.model_names_refused.labels(ex.upstream).inc()


class Trace:
    """The exchange's spans end, with what was decided on it (:mod:`proxy.telemetry`; on when configured)."""

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    def __call__(self, ex: Exchange) -> None:
        self.tracing.finish(ex)


class CountVerdicts:
    """``refusal_guard_responses_total``: one count per judged answer (choice)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def __call__(self, ex: Exchange) -> None:
        for v in ex.verdicts:
            self.metrics.responses.labels(ex.model_label, ex.upstream, ex.traffic, v.label).inc()


class LogLine:
    """One JSON log line per exchange, with its first verdict."""

    def __call__(self, ex: Exchange) -> None:
        first = ex.verdicts[0] if ex.verdicts else None
        logger.info(
            "request",
            request_id=ex.request_id,
            method=ex.method,
            path=ex.path,
            model=ex.model_label,
            upstream=ex.upstream,
            traffic=ex.traffic,
            stream=ex.stream,
            status=ex.status,
            latency_ms=round(ex.duration * 1000, 3),
            verdict=first.label if first else ("shed" if ex.shed else None),
            score=round(first.score, 4) if first else None,
            error=ex.error,
        )


class Audit:
    """The exchange into the audit log: queued, or under strict durability with a future that
    resolves once the record is durable (the pipeline's awaited road waits on it)."""

    def __init__(self, writer: AuditWriter) -> None:
        self.writer = writer
        self.strict = writer.settings.durability == "strict"

    def __call__(self, ex: Exchange) -> Future[None] | None:
        if self.strict:
            return self.writer.commit(ex)
        self.writer.submit(ex)
        return None
