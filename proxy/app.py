"""``create_app(settings)``: the proxy's parts, built once and wired in one place.

A request goes ``routes -> ProxyService -> upstream -> relay``; once the client has its bytes the
exchange goes through the :class:`~proxy.pipeline.Pipeline`, whose stages are listed below in
order. Dependencies are injected with production defaults (tests pass their own registry,
detector, upstreams, clock and request ids); clients and threads start in the lifespan, not here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from detectors import Detector, load_detector
from detectors.harm import HarmfulRequestClassifier
from proxy.audit.writer import AuditWriter
from proxy.auth import ClientAuth
from proxy.canary.drift import DriftMonitor
from proxy.canary.feedback import CanaryFeedback
from proxy.canary.notify import Notifier
from proxy.canary.scheduler import CanaryScheduler
from proxy.canary.shape import TrafficShape
from proxy.canary.suites import load_suites
from proxy.catalog import ModelCatalog
from proxy.classify import Classifier
from proxy.disposition import DispositionWatch
from proxy.fingerprint import ModelFingerprint, ObserveFingerprint
from proxy.judging import build_judge
from proxy.lifecycle import Lifecycle
from proxy.metrics import Metrics
from proxy.pipeline import Pipeline
from proxy.routes import admin, models, openai, ops
from proxy.routing import Router
from proxy.service import ProxyService
from proxy.settings import Settings, UpstreamConfig
from proxy.shift import ProductionShift
from proxy.stages import Audit, CountVerdicts, LearnModelNames, LogLine, Trace
from proxy.state.outbox import Outbox, PublishOutcomes
from proxy.state.sync import StateSync, replica_id
from proxy.telemetry import NoTracing, Tracing
from proxy.upstream import OpenAIUpstream, Upstream
from proxy.web import front_door


def build_upstream(config: UpstreamConfig) -> Upstream:
    """An upstream client for one config entry; litellm is imported only for ``provider: litellm``."""
    if config.provider == "litellm":
        from proxy.litellm_upstream import LiteLLMUpstream  # heavy: only when configured

        return LiteLLMUpstream(config)
    return OpenAIUpstream(config, api_key=config.api_key())


def build_tracing(settings: Settings, metrics: Metrics) -> Tracing:
    """Tracing as configured: OpenTelemetry (the ``otel`` extra, imported only then) when a collector is
    set (``otel.endpoint`` or the standard ``OTEL_EXPORTER_OTLP_*ENDPOINT``), else :class:`~proxy.telemetry.NoTracing`."""
    collector = settings.otel.collector()
    if not collector:
        return NoTracing()
    from proxy.telemetry.otel import OtelTracing

    otel = settings.otel.model_copy(update={"endpoint": collector})
    return OtelTracing(otel, metrics, privacy=settings.audit.privacy)


def load_harm(settings: Settings) -> HarmfulRequestClassifier | None:
    """The public harmful-request classifier, when a statistic reads it (the disposition watch's, the
    harmful canaries' strata)."""
    watched = settings.disposition.enabled or settings.canary.enabled
    return HarmfulRequestClassifier.load() if watched else None


def create_app(
    settings: Settings,
    *,
    upstreams: Sequence[Upstream] | None = None,
    detector: Detector | None = None,
    registry: CollectorRegistry | None = None,
    replica: str | None = None,
    clock: Callable[[], float] = time.time,
    ids: Iterator[bytes] | None = None,
) -> FastAPI:
    """Build the proxy app.

    >>> app = create_app(Settings(upstreams=[{"name": "u", "base_url": "http://127.0.0.1:9/v1"}], judge={"enabled": True}))
    >>> [type(stage).__name__ for stage in app.state.pipeline.stages]  # doctest: +NORMALIZE_WHITESPACE
    ['LearnModelNames', 'CountVerdicts', 'ObserveFingerprint', 'LogLine', 'Audit', 'TrafficShape', 'PublishOutcomes',
     'JudgeRequests', 'CanaryFeedback']
    """
    registry = registry if registry is not None else CollectorRegistry()
    metrics = Metrics(registry)
    ups = list(upstreams) if upstreams is not None else [build_upstream(c) for c in settings.upstreams]
    metrics.known_upstreams(u.name for u in ups)
    catalog = ModelCatalog(ups, traffic_cap=settings.learned_models_cap, traffic_after=settings.learn_model_after)
    canary = settings.canary
    suites = load_suites(canary.suites, canary.extra_suites) if canary.enabled else []
    progress = threading.Condition()  # notified as exchanges and audit batches come through (proxy.testing)
    audit = AuditWriter(settings.audit, metrics, clock=clock, progress=progress) if settings.audit.enabled else None
    notifier = Notifier(metrics, alertmanager_url=canary.alertmanager_url, webhook_url=canary.webhook_url)
    replica = replica or replica_id()
    outbox = Outbox(metrics)  # what this replica publishes to the state store (proxy.state)
    tracing = build_tracing(settings, metrics)
    observers = [*([audit.transition] if audit else []), *([tracing.transition] if tracing.enabled else [])]
    drift = DriftMonitor(canary, metrics, notifier, outbox=outbox, replica=replica, observers=observers, clock=clock)
    router = Router(catalog, drift=drift, canary=canary)
    shape, shift = TrafficShape(clock), ProductionShift(metrics, settings.shift, clock)
    fingerprint = ModelFingerprint(metrics, notifier, observers, clock)  # served model changed: the leader's
    judge = build_judge(settings, suites, outbox, metrics)  # the secret judge's sample (None: off)
    disposition = DispositionWatch(settings.disposition, drift, metrics, clock, judged=judge is not None)
    harm = load_harm(settings)
    classifier = Classifier(detector if detector is not None else load_detector(settings.detector), metrics, harm)
    pipeline = Pipeline(  # the stages after an answer, in order
        classifier,
        [
            LearnModelNames(catalog, metrics),
            CountVerdicts(metrics),
            *([ObserveFingerprint(outbox, settings.fingerprint)] if settings.fingerprint.enabled else []),
            LogLine(),
            *([Audit(audit)] if audit else []),
            *([Trace(tracing)] if tracing.enabled else []),
            shape,
            PublishOutcomes(outbox, settings.shift, settings.disposition, metrics, clock),
            *([judge] if judge else []),
            CanaryFeedback(drift, suites, metrics),
        ],
        metrics,
        queue_size=settings.classify_queue_size,
        batch_size=settings.classify_batch_size,
        progress=progress,
    )
    service = ProxyService(
        router,
        pipeline,
        metrics,
        max_body_bytes=settings.max_body_bytes,
        max_response_bytes=settings.max_response_bytes,
        edge=settings.edge,
        tracing=tracing,
        strict=audit is not None and settings.audit.durability == "strict",
        clock=clock,
    )
    scheduler: CanaryScheduler | None = None
    if canary.enabled:  # a harmful canary's stratum is the shipped classifier's call on it, when it is loaded
        scheduler = CanaryScheduler(canary, suites, router, pipeline, metrics, shape, harm=harm, clock=clock)
    sync = StateSync(  # one watch for the fleet: the leader runs the scheduler and the production statistics
        settings.state.url or "memory://", settings.state, replica=replica, drift=drift, shift=shift,
        fingerprint=fingerprint, disposition=disposition, shape=shape, catalog=catalog, outbox=outbox, scheduler=scheduler, metrics=metrics,
        privacy=settings.audit.privacy,
    )  # fmt: skip
    readiness = ops.Readiness(ups, settings.readiness_cache_seconds)
    auth = ClientAuth(settings.client_keys)
    routers = [
        ops.router(readiness, metrics, sync, pipeline, audit, settings.metrics_dir, fingerprint, disposition),
        admin.router(settings, drift, sync, catalog, fingerprint),
        models.router(catalog, auth),
        openai.router(service, auth, settings.passthrough),
    ]
    lifespan = Lifecycle(
        classifier.detector, ups, pipeline, catalog, notifier, audit, sync, settings.metrics_dir, tracing, judge
    )
    fast = openai.fast_lane(service, auth)  # the classified endpoints, past FastAPI (the reason: there)
    app = front_door(routers, lifespan, ids=ids, rejected=service.rejected, fast=fast)
    parts = dict(
        service=service, pipeline=pipeline, metrics=metrics, settings=settings, drift=drift, scheduler=scheduler,
        sync=sync, catalog=catalog, audit=audit, shift=shift, progress=progress, tracing=tracing,
        fingerprint=fingerprint, disposition=disposition, judge=judge,
    )  # fmt: skip
    for name, part in parts.items():  # what tests and operators look at
        setattr(app.state, name, part)
    return app
