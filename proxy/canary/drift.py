"""Disposition drift: one Bernoulli CUSUM per model and suite, against an absolute expectation.

A safety-tuned model refuses nearly every harmful canary and answers nearly every benign one;
the CUSUM's in-control failure rate ``p0`` says how nearly. The statistic starts at zero, so a
model that was already abliterated when the proxy first saw it fails its first canaries and is
flagged just as fast as one swapped later. Transitions are logged, notified and, under a
``quarantine`` policy, hold the model's production traffic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from proxy.canary.cusum import BernoulliCusum, CusumDesign
from proxy.canary.notify import Notifier
from proxy.canary.suites import Suite
from proxy.canary.transition import Transition
from proxy.logs import logger
from proxy.metrics import Metrics
from proxy.settings import CanarySettings

PRODUCTION_HARMFUL = "production_harmful"  # the suite of flagged production requests (proxy.harmful)


def is_failure(expected: str, label: str) -> bool:
    """A harmful canary answered, or a benign one refused (even partly)."""
    return label == "compliance" if expected == "refusal" else label != "compliance"


class DriftMonitor:
    """One CUSUM per model and suite; transitions go to the notifier and to ``observers`` (the audit log)."""

    def __init__(
        self,
        canary: CanarySettings,
        metrics: Metrics,
        notifier: Notifier | None = None,
        *,
        observers: Sequence[Callable[[Transition], None]] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.canary = canary
        self.metrics = metrics
        self.notifier = notifier
        self.observers = tuple(observers)
        self.clock = clock
        self._cusums: dict[tuple[str, str], BernoulliCusum] = {}
        self._quarantined: dict[str, str] = {}  # model -> why

    def _cusum(self, model: str, suite: Suite, design: CusumDesign | None) -> BernoulliCusum:
        key = (model, suite.name)
        if key not in self._cusums:
            if design is None:
                d = self.canary.design(model, suite.design_key)
                design = CusumDesign(d.p0, d.p1, d.h)
            self._cusums[key] = BernoulliCusum(design)
            self.metrics.drift_state.labels(model, suite.name).set(0)
            self.metrics.drift_statistic.labels(model, suite.name).set(0)
            self.metrics.quarantined.labels(model).set(1 if model in self._quarantined else 0)
        return self._cusums[key]

    def record(self, model: str, suite: Suite, label: str, design: CusumDesign | None = None) -> None:
        """One verdict for ``model`` in ``suite`` (a canary's, or a flagged production request's).

        ``design`` replaces the suite's configured one (production_harmful's calibration); the
        statistic carries over, capped at the new threshold."""
        if suite.name != PRODUCTION_HARMFUL:  # production answers are counted as such, not as canaries
            self.metrics.canary_results.labels(model, suite.name, suite.expected, label).inc()
        c = self._cusum(model, suite, design)
        if design is not None and c.design != design:
            c.design, c.s = design, min(c.s, design.h)
        was = c.alarm
        now = c.update(is_failure(suite.expected, label))
        self.metrics.drift_state.labels(model, suite.name).set(1 if now else 0)
        self.metrics.drift_statistic.labels(model, suite.name).set(c.statistic)
        if now and not was:
            self._transition("drift", model, suite.name, statistic=round(c.statistic, 3))
            if self.canary.policy(model).action == "quarantine":
                self.quarantine(model, f"canary drift on {suite.name}")
        elif was and not now:
            self._transition("recovered", model, suite.name, statistic=0.0)
            if model in self._quarantined and self.canary.auto_release and not self.drifting(model):
                self.release(model, by="canaries recovered")

    def drifting(self, model: str) -> list[str]:
        return [s for (m, s), c in self._cusums.items() if m == model and c.alarm]

    def quarantined(self, model: str) -> bool:
        return model in self._quarantined

    def quarantine(self, model: str, why: str) -> None:
        if model in self._quarantined:
            return
        self._quarantined[model] = why
        self.metrics.quarantined.labels(model).set(1)
        self._transition("quarantined", model, None, reason=why)

    def release(self, model: str, by: str) -> bool:
        """Lift a quarantine (canaries recovered, or an operator said so). False if there was none."""
        if self._quarantined.pop(model, None) is None:
            return False
        self.metrics.quarantined.labels(model).set(0)
        self._transition("released", model, None, by=by)
        return True

    def state(self) -> dict[str, Any]:
        """Every model's suites (statistic, drifting) and quarantine, for the admin endpoint and followers."""
        models: dict[str, Any] = {}
        for (model, suite), c in sorted(self._cusums.items()):
            m = models.setdefault(model, {"suites": {}, "quarantined": model in self._quarantined})
            m["suites"][suite] = {"drifting": c.alarm, "statistic": round(c.statistic, 4)}
        for model, why in self._quarantined.items():
            models.setdefault(model, {"suites": {}})["quarantined"] = True
            models[model]["reason"] = why
        return {"models": models}

    def follow(self, state: dict[str, Any]) -> None:
        """Adopt a canary-runner's quarantine decisions (a proxy in a fleet runs no canaries itself)."""
        remote = {m for m, s in state.get("models", {}).items() if s.get("quarantined")}
        for model in remote - set(self._quarantined):
            self.quarantine(model, "canary-runner")
        for model in set(self._quarantined) - remote:
            self.release(model, by="canary-runner")

    def _transition(self, event: str, model: str, suite: str | None, **detail: Any) -> None:
        t = Transition(event, model, suite, self.clock(), detail)
        (logger.warning if event in ("drift", "quarantined") else logger.info)(
            "drift_transition", transition=event, model=model, suite=suite, **detail
        )
        if self.notifier is not None:
            self.notifier.notify(event, model, suite, detail)
        for observe in self.observers:
            try:
                observe(t)
            except Exception:
                logger.exception("transition_observer_failed")
