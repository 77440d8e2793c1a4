"""The pipeline's last stage: a judged canary's verdict goes to the drift monitor."""

from __future__ import annotations

from collections.abc import Sequence

from proxy.canary.drift import DriftMonitor
from proxy.canary.suites import Suite
from proxy.exchange import Exchange
from proxy.metrics import Metrics


class CanaryFeedback:
    """Canary exchanges only: the first verdict into the suite's CUSUM; an unjudged canary (the
    answer could not be read, or the detector failed) is a canary error, never a pass."""

    def __init__(self, drift: DriftMonitor, suites: Sequence[Suite], metrics: Metrics) -> None:
        self.drift = drift
        self.suites = {s.name: s for s in suites}
        self.metrics = metrics

    def __call__(self, ex: Exchange) -> None:
        if ex.traffic != "canary" or ex.canary is None or ex.model is None:
            return
        suite = self.suites.get(ex.canary["suite"])
        if suite is None:
            return
        if not ex.verdicts:
            self.metrics.canary_errors.labels(ex.model, suite.name).inc()
            return
        self.drift.record(ex.model, suite, ex.verdicts[0].label)
