"""The production_harmful drift test: calibrated per model, capped, fast against abliteration, quiet in control."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry

from detectors import Verdict
from proxy.canary.drift import DriftMonitor
from proxy.exchange import Exchange
from proxy.harmful import HarmfulWatch
from proxy.metrics import Metrics
from proxy.settings import CanarySettings, DispositionSettings, HarmfulWatchSettings, ShiftSettings
from proxy.state.outbox import HARMFUL, Outbox, PublishOutcomes
from proxy.state.records import Calibration
from proxy.testing import exchange


def flagged(label: str, *, model: str = "m", traffic: str = "production", harmful: bool = True) -> Exchange:
    return exchange(
        model=model, model_label=model, traffic=traffic, harmful=harmful, verdicts=[Verdict.of(label, 0.0, "t", "1")]
    )  # type: ignore[arg-type]


class Road:
    """The road a flagged request takes: the replica's publishing stage, the outbox, the leader's watch."""

    def __init__(self, canary: CanarySettings, drift: DriftMonitor, metrics: Metrics) -> None:
        self.outbox = Outbox(metrics)
        self.stage = PublishOutcomes(self.outbox, canary, ShiftSettings(), DispositionSettings(enabled=False), metrics)
        self.watch = HarmfulWatch(canary, drift, metrics)

    def __call__(self, ex: Exchange) -> None:
        self.stage(ex)
        for ev in self.outbox.take().events:
            if ev[0] == HARMFUL:
                self.watch.observe(ev[1], ev[2])


def watch(**settings: object) -> tuple[Road, DriftMonitor, CollectorRegistry]:
    canary = CanarySettings.model_validate({"production_harmful": settings} if settings else {})
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    drift = DriftMonitor(canary, metrics)
    return Road(canary, drift, metrics), drift, registry


def feed(w: Road, answered_share: float, n: int, seed: int, model: str = "m") -> None:
    rng = random.Random(seed)
    for _ in range(n):
        w(flagged("compliance" if rng.random() < answered_share else "refusal", model=model))


def drifting(drift: DriftMonitor, model: str = "m") -> bool:
    return "production_harmful" in drift.drifting(model)


def test_a_safe_model_that_answers_some_flagged_requests_stays_in_control() -> None:
    """In-control rate 0.25 (borderline requests, classifier errors): 20,000 flagged requests, no alarm."""
    w, drift, registry = watch()
    feed(w, 0.25, 20_000, seed=1)
    assert not drifting(drift)
    p0 = registry.get_sample_value("refusal_guard_harmful_in_control_rate", {"model": "m"})
    assert p0 is not None and 0.2 < p0 < 0.3  # learned over the burn-in
    answered = registry.get_sample_value(
        "refusal_guard_harmful_requests_total", {"model": "m", "verdict": "compliance"}
    )
    assert answered is not None and 4_000 < answered < 6_000


def test_abliteration_after_burn_in_is_caught_fast() -> None:
    """After calibration at 0.25, a switch to answering 95% alarms within 40 flagged requests."""
    w, drift, _ = watch()
    feed(w, 0.25, 1_000, seed=2)
    assert not drifting(drift)
    for n in range(1, 200):
        w(flagged("compliance" if n % 20 else "refusal"))
        if drifting(drift):
            break
    assert drifting(drift) and n <= 40


def test_a_model_abliterated_from_its_first_request_is_flagged_despite_the_burn_in() -> None:
    """The burn-in tests against the ceiling, and the learned rate is capped at it: no free pass."""
    w, drift, registry = watch(burn_in=1_000)
    feed(w, 1.0, 400, seed=3)  # still in the burn-in
    assert drifting(drift)
    feed(w, 0.99, 2_000, seed=4)
    assert drifting(drift)
    ceiling = HarmfulWatchSettings().ceiling
    assert registry.get_sample_value("refusal_guard_harmful_in_control_rate", {"model": "m"}) == ceiling


def test_a_configured_in_control_rate_skips_the_burn_in() -> None:
    """With in_control set, the model's test is designed from it at once (per-model policies override)."""
    canary = CanarySettings.model_validate(
        {"production_harmful": {"in_control": 0.1}, "policies": {"special": {"harmful_in_control": 0.4}}}
    )
    metrics = Metrics(CollectorRegistry())
    w = HarmfulWatch(canary, DriftMonitor(canary, metrics), metrics)
    assert w.design("m", answered=False).p0 == 0.1
    assert w.design("special", answered=False).p0 == 0.4


def test_canaries_and_unflagged_requests_are_never_counted() -> None:
    """Only production requests the classifier flagged feed the test."""
    w, drift, registry = watch()
    for _ in range(500):
        w(flagged("compliance", traffic="canary"))
        w(flagged("compliance", harmful=False))
    assert not drifting(drift)
    assert (
        registry.get_sample_value("refusal_guard_harmful_requests_total", {"model": "m", "verdict": "compliance"})
        is None
    )


def test_a_quarantine_policy_applies_to_production_harmful() -> None:
    """Drift on this suite quarantines a model whose policy says so, as canary drift does."""
    canary = CanarySettings.model_validate({"policies": {"m": {"action": "quarantine"}}})
    metrics = Metrics(CollectorRegistry())
    drift = DriftMonitor(canary, metrics)
    w = Road(canary, drift, metrics)
    feed(w, 1.0, 400, seed=5)
    assert drift.quarantined("m")


def test_readme_delay_table_is_the_computation() -> None:
    """The detection-delay table of docs/production-monitor.md is what the exact ARL gives for the shipped classifier's card."""
    from pathlib import Path

    from detectors.harm import HarmfulRequestClassifier
    from proxy.harmful import delay_table

    results = HarmfulRequestClassifier.load().card["leave_one_source_out"]
    readme = (Path(__file__).resolve().parents[2] / "docs" / "production-monitor.md").read_text()
    assert delay_table(results["recall"], results["false_positive_rate_ordinary"]) in readme


def test_a_new_leader_resumes_the_calibration_and_the_statistic() -> None:
    """What the leader writes (statistics, calibrations) is what the next one resumes from: no burn-in
    again, and the statistic where it was."""
    w, drift, _ = watch()
    feed(w, 0.25, 300, seed=6)
    feed(w, 0.9, 10, seed=7)
    rows, cals = drift.changed(), w.watch.changed()
    canary = CanarySettings()
    metrics = Metrics(CollectorRegistry())
    drift2 = DriftMonitor(canary, metrics)
    w2 = HarmfulWatch(canary, drift2, metrics)
    drift2.load(rows)
    w2.load(cals)
    assert drift2.state() == drift.state()
    assert w2.design("m", answered=False) == w.watch.design("m", answered=False)


class Clock:
    t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_the_design_is_in_time_at_the_rate_the_burn_in_measured() -> None:
    """Two models, one flagged request a second and ten: each one false alarm per 60 days in time (not
    per 10^6 requests), the busier one with the higher threshold; the rate goes to the store and a new
    leader designs the same; a calibration an earlier release stored (no rate) is learnt again."""
    canary = CanarySettings()
    metrics, clock = Metrics(CollectorRegistry()), Clock()
    w = HarmfulWatch(canary, DriftMonitor(canary, metrics), metrics, clock)
    for i in range(2000):
        clock.t = 1000.0 + i / 10
        w.observe("busy", "compliance" if i % 4 == 0 else "refusal")
        if i % 10 == 0:
            w.observe("quiet", "compliance" if i % 40 == 0 else "refusal")
    quiet, busy = w.design("quiet", answered=False), w.design("busy", answered=False)
    rates = {c.model: c.rate for c in w.changed()}
    assert rates["busy"] == pytest.approx(10.0, rel=0.05) and rates["quiet"] == pytest.approx(1.0, rel=0.05)
    for d, rate in ((quiet, 1.0), (busy, 10.0)):
        assert 60 <= d.arl(d.p0) / rate / 86400 < 90  # days between false alarms, by the exact ARL
    assert busy.h > quiet.h
    w2 = HarmfulWatch(canary, DriftMonitor(canary, metrics), metrics, clock)
    w2.load([Calibration("busy", 200, 50, busy.p0, rates["busy"]), Calibration("old", 200, 50, 0.25, None)])
    assert w2.design("busy", answered=False) == busy
    assert w2.design("old", answered=False).p0 == canary.production_harmful.ceiling  # a burn-in again
