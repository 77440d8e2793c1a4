"""Build the Grafana dashboards from code: ``python grafana/build.py`` writes ``grafana/dashboards/*.json``.

Plain dictionaries in Grafana's dashboard JSON model (schemaVersion 39): no SDK dependency to pin.
A test rebuilds them and compares with the committed files, checks that every metric they name is
one the proxy exports, and runs every query against a real Prometheus that scraped a real proxy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "prometheus"}
REFUSED = 'verdict=~"refusal|partial_refusal"'


def panel(
    title: str,
    description: str,
    targets: list[tuple[str, str]],
    *,
    kind: str = "timeseries",
    unit: str = "short",
    thresholds: list[tuple[float | None, str]] | None = None,
    w: int = 12,
    h: int = 8,
    minmax: tuple[float, float] | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit}
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in thresholds]}
        if kind == "timeseries":
            defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    if minmax:
        defaults["min"], defaults["max"] = minmax
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": w, "h": h},
        "targets": [
            {"refId": chr(65 + i), "expr": e, "legendFormat": legend, "datasource": DS}
            for i, (e, legend) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {},
    }


def _layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    x = y = row_h = 0
    for i, p in enumerate(panels):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        p["id"] = i + 1
        x, row_h = x + w, max(row_h, h)
    return panels


def dashboard(
    uid: str, title: str, panels: list[dict[str, Any]], variables: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["refusal-guard"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables or []},
        "annotations": {"list": []},
        "panels": _layout(panels),
    }


def overview() -> dict[str, Any]:
    return dashboard(
        "refusal-guard-overview",
        "refusal-guard: fleet overview",
        [
            panel(
                "Refusal rate per model: production vs canary",
                "Share of answers classified refusal or partial refusal, per model and traffic (5-minute rate). "
                "Canary traffic is mostly harmful prompts, so its rate sits far above production's.",
                [("model_traffic:refusal_guard_refusal_rate:ratio_rate5m", "{{model}} {{traffic}}")],
                unit="percentunit",
                minmax=(0, 1),
            ),
            panel(
                "Harmful canaries refused",
                "Share of harmful canaries each model refused over 30 minutes. A safety-tuned model stays near 100%; "
                "under 50% pages (canary refusal collapse).",
                [('model_suite:refusal_guard_canary_refusal_rate:ratio_rate30m{suite="harmful"}', "{{model}}")],
                unit="percentunit",
                minmax=(0, 1),
                thresholds=[(None, "red"), (0.5, "orange"), (0.9, "green")],
            ),
            panel(
                "Benign canaries refused (over-refusal)",
                "Share of benign canaries (harmless requests that sound unsafe) each model refused over 30 minutes. "
                "Above 30% warns (over-refusal spike).",
                [("model:refusal_guard_over_refusal_rate:ratio_rate30m", "{{model}}")],
                unit="percentunit",
                minmax=(0, 1),
                thresholds=[(None, "green"), (0.1, "orange"), (0.3, "red")],
            ),
            panel(
                "Drift state",
                "1 while a model's canary CUSUM for a suite is in alarm; 0 when in control.",
                [("max by (model, suite) (refusal_guard_drift_state)", "{{model}} {{suite}}")],
                kind="state-timeline",
                thresholds=[(None, "green"), (1, "red")],
            ),
            panel(
                "Drift statistic",
                "Each CUSUM statistic as a fraction of its alarm threshold: 1.0 is an alarm.",
                [("max by (model, suite) (refusal_guard_drift_statistic)", "{{model}} {{suite}}")],
                unit="percentunit",
                thresholds=[(None, "green"), (0.5, "orange"), (1, "red")],
            ),
            panel(
                "Served model changed (fingerprint)",
                "1 while the answers of a model no longer match its fingerprint's baseline, by tier: tokenizer "
                "(token counts off the fitted tokenizer and template) and identity "
                "(reported model or system_fingerprint) page; statistical (the canaries' answers left their "
                "baseline's distribution) warns. Sees a swap even when refusal rates hold.",
                [("max by (model, tier) (refusal_guard_model_changed)", "{{model}} {{tier}}")],
                kind="state-timeline",
                thresholds=[(None, "green"), (1, "red")],
            ),
            panel(
                "Fingerprint statistics",
                "Each fingerprint tier's statistic as a fraction of its threshold (1.0 decides a change), and the "
                "production tier's (answer length, finish reasons, speed, opening words of real traffic, window "
                "against baseline), which only corroborates: its prompts move with the users.",
                [("max by (model, tier) (refusal_guard_fingerprint_statistic)", "{{model}} {{tier}}")],
                unit="percentunit",
                thresholds=[(None, "green"), (0.5, "orange"), (1, "red")],
            ),
            panel(
                "Quarantined models",
                "1 while refusal-guard holds a model's traffic (503 or fallback).",
                [("max by (model) (refusal_guard_quarantined)", "{{model}}")],
                kind="stat",
                thresholds=[(None, "green"), (1, "red")],
                w=6,
            ),
            panel(
                "Production refusal-rate shift",
                "1 while the proxy sees a model's production refusal rate off its rolling baseline.",
                [("max by (model) (refusal_guard_production_shift)", "{{model}}")],
                kind="stat",
                thresholds=[(None, "green"), (1, "orange")],
                w=6,
            ),
            panel(
                "Secret judge: sample and outcomes",
                "The share of production requests the secret judge samples now (1: every one; it falls as load "
                "rises, within its budget of a core), and per second the requests it judged, skipped (outside the "
                "sample), shed (its queue full) or failed on. Its calls feed production_judged.",
                [
                    ("min(refusal_guard_judge_sample_ratio)", "sample ratio"),
                    ("sum by (outcome) (rate(refusal_guard_judge_requests_total[5m]))", "{{outcome}} /s"),
                ],
            ),
            panel(
                "Traffic by status",
                "Requests per second through the proxy, per model and HTTP status.",
                [("sum by (model, code) (rate(refusal_guard_requests_total[5m]))", "{{model}} {{code}}")],
                unit="reqps",
            ),
            panel(
                "Proxy overhead",
                "Time spent in the proxy itself (the request's duration less the upstream's), p50 and p99.",
                [
                    ("histogram_quantile(0.5, sum by (le) (rate(refusal_guard_overhead_seconds_bucket[5m])))", "p50"),
                    ("histogram_quantile(0.99, sum by (le) (rate(refusal_guard_overhead_seconds_bucket[5m])))", "p99"),
                ],
                unit="s",
            ),
            panel(
                "Request latency p99 per model",
                "End-to-end p99 latency per model, streamed and not.",
                [
                    (
                        "histogram_quantile(0.99, sum by (le, model, stream) (rate(refusal_guard_request_duration_seconds_bucket[5m])))",
                        "{{model}} stream={{stream}}",
                    )
                ],
                unit="s",
            ),
            panel(
                "Upstream errors",
                "Upstream failures per second, by upstream and kind (connect, timeout, read, status_5xx, ...); "
                "2xx answers with no readable assistant text (unclassifiable); requests sent again because "
                "a pooled connection had been closed by the upstream.",
                [
                    (
                        "sum by (upstream, kind) (rate(refusal_guard_upstream_errors_total[5m]))",
                        "{{upstream}} {{kind}}",
                    ),
                    (
                        "sum by (upstream) (rate(refusal_guard_unparseable_responses_total[5m]))",
                        "{{upstream}} unparseable",
                    ),
                    ("sum by (upstream) (rate(refusal_guard_upstream_retries_total[5m]))", "{{upstream}} retried"),
                ],
                unit="reqps",
            ),
            panel(
                "Audit health",
                "Records committed per second, queue depth, and records spooled or dropped in the last hour.",
                [
                    ("sum(rate(refusal_guard_audit_records_total[5m]))", "committed/s"),
                    ("sum(refusal_guard_audit_queue_depth)", "queued"),
                    ("sum(increase(refusal_guard_audit_spooled_total[1h]))", "spooled (1h)"),
                    ("sum(increase(refusal_guard_audit_dropped_total[1h]))", "dropped (1h)"),
                ],
            ),
            panel(
                "Classification health",
                "Classifications shed under overload and detector failures, per second; the classification queue.",
                [
                    ("sum(rate(refusal_guard_classification_shed_total[5m]))", "shed/s"),
                    ("sum(rate(refusal_guard_detector_errors_total[5m]))", "detector errors/s"),
                    ("sum(refusal_guard_classification_queue_depth)", "queued"),
                ],
            ),
        ],
    )


def per_model() -> dict[str, Any]:
    m = 'model="$model"'
    variable = {
        "name": "model",
        "label": "Model",
        "type": "query",
        "datasource": DS,
        "refresh": 2,
        "query": {"query": "label_values(refusal_guard_responses_total, model)", "refId": "model"},
        "definition": "label_values(refusal_guard_responses_total, model)",
        "includeAll": False,
        "multi": False,
        "sort": 1,
    }
    return dashboard(
        "refusal-guard-model",
        "refusal-guard: model drill-down",
        [
            panel(
                "Refusal rate: production vs canary",
                "This model's refused share, per traffic kind (5-minute rate).",
                [(f"model_traffic:refusal_guard_refusal_rate:ratio_rate5m{{{m}}}", "{{traffic}}")],
                unit="percentunit",
                minmax=(0, 1),
            ),
            panel(
                "Canary refusal rate per suite",
                "Refused share per canary suite over 30 minutes: harmful should stay high, benign low.",
                [(f"model_suite:refusal_guard_canary_refusal_rate:ratio_rate30m{{{m}}}", "{{suite}}")],
                unit="percentunit",
                minmax=(0, 1),
            ),
            panel(
                "Canary verdicts",
                "Canary answers in the last hour, by suite and verdict.",
                [
                    (
                        f"sum by (suite, verdict) (increase(refusal_guard_canary_results_total{{{m}}}[1h]))",
                        "{{suite}} {{verdict}}",
                    )
                ],
            ),
            panel(
                "Drift statistic",
                "CUSUM statistic per suite as a fraction of the alarm threshold.",
                [(f"max by (suite) (refusal_guard_drift_statistic{{{m}}})", "{{suite}}")],
                unit="percentunit",
                thresholds=[(None, "green"), (0.5, "orange"), (1, "red")],
            ),
            panel(
                "Drift state and quarantine",
                "Drift state per suite, and whether the model is quarantined.",
                [
                    (f"max by (suite) (refusal_guard_drift_state{{{m}}})", "drift {{suite}}"),
                    (f"max(refusal_guard_quarantined{{{m}}})", "quarantined"),
                ],
                kind="state-timeline",
                thresholds=[(None, "green"), (1, "red")],
            ),
            panel(
                "Flagged production requests by verdict",
                "Production requests the harmful-request classifier flags, by the verdict on their answer "
                "(per second). A safe model refuses most; the production_harmful statistic watches the answered "
                "share, risk-adjusted by the classifier's score and the harmful share of the moment.",
                [
                    (
                        f"sum by (verdict) (rate(refusal_guard_harmful_requests_total{{{m}}}[5m]))",
                        "{{verdict}}",
                    ),
                ],
            ),
            panel(
                "Production answers by verdict",
                "Production answers per second, by verdict.",
                [
                    (
                        f'sum by (verdict) (rate(refusal_guard_responses_total{{{m}, traffic="production"}}[5m]))',
                        "{{verdict}}",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Production refusal rate: last hour vs 7 days",
                "The production shift alert compares these two.",
                [
                    (f"model:refusal_guard_production_refusal_rate:ratio_rate1h{{{m}}}", "1h"),
                    (f"model:refusal_guard_production_refusal_rate:ratio_rate7d{{{m}}}", "7d"),
                ],
                unit="percentunit",
            ),
            panel(
                "Latency",
                "p50 and p99 end-to-end latency for this model.",
                [
                    (
                        f"histogram_quantile(0.5, sum by (le) (rate(refusal_guard_request_duration_seconds_bucket{{{m}}}[5m])))",
                        "p50",
                    ),
                    (
                        f"histogram_quantile(0.99, sum by (le) (rate(refusal_guard_request_duration_seconds_bucket{{{m}}}[5m])))",
                        "p99",
                    ),
                ],
                unit="s",
            ),
            panel(
                "Requests by status",
                "Requests per second for this model, by HTTP status.",
                [(f"sum by (code) (rate(refusal_guard_requests_total{{{m}}}[5m]))", "{{code}}")],
                unit="reqps",
            ),
            panel(
                "Canary errors",
                "Canaries per second that got no classifiable answer.",
                [(f"sum by (suite) (rate(refusal_guard_canary_errors_total{{{m}}}[5m]))", "{{suite}}")],
                unit="reqps",
            ),
        ],
        [variable],
    )


DASHBOARDS = {"overview.json": overview, "model.json": per_model}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2, sort_keys=True) + "\n" for name, build in DASHBOARDS.items()}


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print("wrote", OUT / name)
