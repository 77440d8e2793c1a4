"""Every metric the proxy exports, defined in one place and bound to one registry.

Label values come from bounded sets only: ``model`` is a model name or pattern from the config
(or ``UNROUTED`` for requests that never reached an upstream), ``upstream`` a configured upstream
name (or ``NO_UPSTREAM``), ``verdict`` one of three labels, ``traffic`` production or canary,
``kind`` one of :data:`UPSTREAM_ERROR_KINDS`, ``code`` an HTTP status code.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

UNROUTED = "unrouted"
NO_UPSTREAM = "none"
TRAFFIC = ("production", "canary")
UPSTREAM_ERROR_KINDS = ("connect", "timeout", "read", "protocol", "status_4xx", "status_5xx", "stream_interrupted")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)


class Metrics:
    """The proxy's metrics. Build one per app; tests pass their own ``CollectorRegistry``.

    >>> from prometheus_client import CollectorRegistry
    >>> r = CollectorRegistry(); m = Metrics(r)
    >>> m.detector_errors.inc(); r.get_sample_value("refusal_guard_detector_errors_total")
    1.0
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.responses = Counter(
            "refusal_guard_responses_total",
            "Classified responses, by verdict.",
            ["model", "upstream", "traffic", "verdict"],
            registry=registry,
        )
        self.requests = Counter(
            "refusal_guard_requests_total",
            "Requests answered by the proxy, by HTTP status code.",
            ["model", "upstream", "code"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "refusal_guard_request_duration_seconds",
            "Time from request received to last byte sent.",
            ["model", "upstream", "stream"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.overhead = Histogram(
            "refusal_guard_overhead_seconds",
            "Time spent in the proxy itself: the request's duration less the time waiting on the upstream.",
            buckets=_OVERHEAD_BUCKETS,
            registry=registry,
        )
        self.trace_export_failures = Counter(
            "refusal_guard_trace_export_failures_total",
            "Spans the OTLP exporter could not deliver (the collector down or refusing); traffic is unaffected.",
            registry=registry,
        )
        self.upstream_errors = Counter(
            "refusal_guard_upstream_errors_total",
            "Upstream failures, by kind.",
            ["upstream", "kind"],
            registry=registry,
        )
        self.upstream_retries = Counter(
            "refusal_guard_upstream_retries_total",
            "Requests sent again on a fresh connection because the pooled one had been closed by the upstream.",
            ["upstream"],
            registry=registry,
        )
        self.detector_errors = Counter(
            "refusal_guard_detector_errors_total",
            "Responses whose classification failed (the response itself was not affected).",
            registry=registry,
        )
        self.unparseable = Counter(
            "refusal_guard_unparseable_responses_total",
            "Successful upstream answers with no assistant text the proxy could read (not JSON, no choices, bad SSE).",
            ["upstream"],
            registry=registry,
        )
        self.classification_shed = Counter(
            "refusal_guard_classification_shed_total",
            "Responses left unclassified because the classification queue was full.",
            registry=registry,
        )
        self.classification_queue_depth = Gauge(
            "refusal_guard_classification_queue_depth",
            "Responses waiting for classification.",
            multiprocess_mode="livesum",
            registry=registry,
        )

        self.canary_results = Counter(
            "refusal_guard_canary_results_total",
            "Canary answers, by suite, expected behaviour and verdict.",
            ["model", "suite", "expected", "verdict"],
            registry=registry,
        )
        self.canary_errors = Counter(
            "refusal_guard_canary_errors_total",
            "Canaries that got no classifiable answer (upstream error, timeout, empty).",
            ["model", "suite"],
            registry=registry,
        )
        self.canary_target = Gauge(
            "refusal_guard_canary_target",
            "1 for each model canaries are sent to (alerts watch for targets whose results stop coming).",
            ["model"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.drift_state = Gauge(
            "refusal_guard_drift_state",
            "1 while the model's canaries in this suite are drifting, else 0.",
            ["model", "suite"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.drift_statistic = Gauge(
            "refusal_guard_drift_statistic",
            "The suite's CUSUM statistic as a fraction of its alarm threshold (1 = alarm).",
            ["model", "suite"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.model_changed = Gauge(
            "refusal_guard_model_changed",
            "1 while the served model differs from its fingerprint's baseline, by tier (tokenizer, identity).",
            ["model", "tier"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.fingerprint_statistic = Gauge(
            "refusal_guard_fingerprint_statistic",
            "The fingerprint tier's statistic as a fraction of its threshold (1 = changed; production only corroborates).",
            ["model", "tier"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.quarantined = Gauge(
            "refusal_guard_quarantined",
            "1 while the model is quarantined, else 0.",
            ["model"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.production_shift = Gauge(
            "refusal_guard_production_shift",
            "1 while the model's production refusal rate has shifted from its rolling baseline, else 0.",
            ["model"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.model_names_refused = Counter(
            "refusal_guard_model_names_refused_total",
            "Answered requests for a model name past the cap on names learned from traffic (counted under the pattern).",
            ["upstream"],
            registry=registry,
        )
        self.harmful_requests = Counter(
            "refusal_guard_harmful_requests_total",
            "Production requests the harmful-request classifier flagged, by the verdict on their answer.",
            ["model", "verdict"],
            registry=registry,
        )
        self.judge_requests = Counter(
            "refusal_guard_judge_requests_total",
            "Production requests offered to the secret judge, by outcome (judged; skipped: outside the "
            "sample; shed: its queue was full; failed).",
            ["outcome"],
            registry=registry,
        )
        self.judge_sample_ratio = Gauge(
            "refusal_guard_judge_sample_ratio",
            "The share of production requests the secret judge samples now (1: every one; it falls as load rises).",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.canary_leader = Gauge(
            "refusal_guard_canary_leader",
            "1 on the replica that holds the canary leader's lease (it sends the canaries), else 0; summed over a "
            "machine's workers and a fleet's replicas it is 1.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.state_store_errors = Counter(
            "refusal_guard_state_store_errors_total",
            "Failed calls to the shared state store, by step (publish, lease, lead, read; dropped: outcomes "
            "lost from a full outbox; malformed: published events the leader could not read).",
            ["op"],
            registry=registry,
        )
        self.notify_errors = Counter(
            "refusal_guard_notify_errors_total",
            "Drift notifications that failed after retries.",
            ["target"],
            registry=registry,
        )

        self.audit_records = Counter(
            "refusal_guard_audit_records_total", "Audit records committed to the sink.", registry=registry
        )
        self.audit_queue_depth = Gauge(
            "refusal_guard_audit_queue_depth",
            "Audit records waiting to be written.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.audit_spooled = Counter(
            "refusal_guard_audit_spooled_total",
            "Audit records written to the local spool while the sink was down.",
            registry=registry,
        )
        self.audit_dropped = Counter(
            "refusal_guard_audit_dropped_total",
            "Audit records lost (queue full, or spool unwritable).",
            registry=registry,
        )
        self.audit_write_errors = Counter(
            "refusal_guard_audit_write_errors_total", "Failed writes to the audit sink.", registry=registry
        )

    def known_upstreams(self, names: Iterable[str]) -> None:
        """Export 0 for each configured upstream's rarely-moving counters, so a dashboard shows 0,
        not "no data", and a rate() over them starts from the first scrape."""
        for name in names:
            self.unparseable.labels(name)
            self.upstream_retries.labels(name)

    def upstream_error(self, upstream: str, kind: str) -> None:
        assert kind in UPSTREAM_ERROR_KINDS, kind
        self.upstream_errors.labels(upstream, kind).inc()
