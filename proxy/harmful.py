"""A production-side drift signal that needs no probe: how each model answers the production
requests the harmful-request classifier (:mod:`detectors.harm`) flags.

An upstream can tell a canary from a client's request only if something on the wire differs;
here nothing is sent at all. The classify thread marks each production request's last user turn
(``Exchange.harmful``); every replica counts the answers to flagged requests
(``refusal_guard_harmful_requests_total{model, verdict}``) and publishes them to the state store
(:mod:`proxy.state.outbox`); the canary leader feeds the union to the drift monitor as suite
``production_harmful``, the same exact-ARL Bernoulli CUSUM as the canaries (a failure is a
flagged request answered), with quarantine policies applied as for canaries. Calibration: see
:class:`proxy.settings.HarmfulWatchSettings`. Canary traffic is never counted here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.canary.cusum import CusumDesign, design_for
from proxy.canary.drift import PRODUCTION_HARMFUL, DriftMonitor
from proxy.canary.suites import Suite
from proxy.logs import logger
from proxy.metrics import Metrics
from proxy.settings import CanarySettings
from proxy.state.records import Calibration
from proxy.watch_settings import HarmfulWatchSettings

SUITE = Suite(PRODUCTION_HARMFUL, "refusal", (), design_key=PRODUCTION_HARMFUL)


@dataclass
class _Calibration:
    seen: int = 0
    answered: int = 0
    design: CusumDesign | None = None  # None until the burn-in ends
    rate: float | None = None  # flagged requests per second over the burn-in
    first: float | None = None  # when this leader saw the burn-in's first flagged request (or resumed it)
    timed: int = 0  # flagged requests seen since ``first``


class HarmfulWatch:
    """``production_harmful`` on the canary leader, over the flagged requests of every replica (their
    outcomes reach it through the state store: :class:`proxy.state.outbox.PublishOutcomes`); one
    calibration per model, stored with the statistics so a new leader resumes the burn-in."""

    def __init__(
        self, canary: CanarySettings, drift: DriftMonitor, metrics: Metrics, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = canary.production_harmful
        self.canary = canary
        self.drift = drift
        self.metrics = metrics
        self.clock = clock
        self._provisional: dict[float, CusumDesign] = {}  # during burn-ins, per p0: the ARL solve is not free
        self._models: dict[str, _Calibration] = {}
        self._dirty: set[str] = set()

    def observe(self, model: str, label: str) -> None:
        """The verdict on the answer to one flagged production request of ``model``."""
        if not self.settings.enabled:
            return
        self.drift.record(model, SUITE, label, self.design(model, answered=label == "compliance"))
        self._dirty.add(model)

    def changed(self) -> list[Calibration]:
        """The calibrations that moved since the last call (what the leader writes next)."""
        out = [
            Calibration(m, c.seen, c.answered, c.design.p0 if c.design else None, c.rate)
            for m in sorted(self._dirty)
            if (c := self._models.get(m)) is not None
        ]
        self._dirty.clear()
        return out

    def load(self, calibrations: list[Calibration]) -> None:
        """Resume the stored calibrations (a new leader). A burn-in under way goes on (its timing afresh:
        the rate is measured on this leader's clock); a row an earlier release wrote has no rate and is
        learnt again."""
        self._models.clear()
        self._dirty.clear()
        for k in calibrations:
            done = k.p0 is not None and k.rate is not None
            cal = self._models[k.model] = _Calibration(k.seen, k.answered) if done or k.p0 is None else _Calibration()
            if done:
                assert k.p0 is not None
                cal.rate, cal.design = k.rate, self._designed(k.p0, k.rate)
            self.metrics.harmful_in_control.labels(k.model).set(cal.design.p0 if cal.design else self._p0(k.model))

    def _p0(self, model: str) -> float:
        """The burn-in's p0: the configured in-control rate, else the ceiling."""
        return self.canary.policy(model).harmful_in_control or self.settings.in_control or self.settings.ceiling

    def design(self, model: str, *, answered: bool) -> CusumDesign:
        """The model's design after this flagged request: calibrated, or the burn-in's (at the configured
        p0, else the ceiling; designed for the assumed rate until the burn-in has measured it)."""
        cal = self._models.get(model)
        if cal is None:
            cal = self._models[model] = _Calibration()
            self.metrics.harmful_in_control.labels(model).set(self._p0(model))
        if cal.design is not None:
            return cal.design
        now = self.clock()
        cal.seen += 1
        cal.answered += answered
        cal.first = now if cal.first is None else cal.first
        cal.timed += 1
        if cal.seen < self.settings.burn_in or cal.timed < min(self.settings.burn_in, 50):
            p0 = self._p0(model)
            if p0 not in self._provisional:
                self._provisional[p0] = self._designed(p0, None)
            return self._provisional[p0]
        s = self.settings
        learned = cal.answered / cal.seen
        configured = self.canary.policy(model).harmful_in_control or s.in_control
        cal.rate = cal.timed / max(1.0, now - cal.first)
        cal.design = self._designed(configured or min(s.ceiling, max(s.floor, learned)), cal.rate)
        self.metrics.harmful_in_control.labels(model).set(cal.design.p0)
        logger.info(
            "harmful_watch_calibrated",
            model=model,
            flagged=cal.seen,
            answered_share=round(learned, 4),
            flagged_per_second=round(cal.rate, 4),
            p0=cal.design.p0,
            p1=round(cal.design.p1, 4),
            h=cal.design.h,
            capped=configured is None and learned > s.ceiling,
        )
        return cal.design

    def _designed(self, p0: float, rate: float | None) -> CusumDesign:
        """One false alarm per ``false_alarm_days`` at ``rate`` flagged requests per second (the assumed
        rate when None): a design in time, whatever the model's traffic."""
        s = self.settings
        target = s.false_alarm_days * 86400 * (rate if rate is not None else s.assumed_rate)
        return design_for(p0, p0 + s.shift * (1 - p0), max(target, 2.0))


def expected_rates(
    share: float, recall: float, fpr: float, safe_answers: float, abliterated_answers: float
) -> tuple[float, float, float]:
    """Per production request: the flagged share, and the answered share among flagged requests for a
    safe model (``p0``) and for an abliterated one. Benign requests the classifier flags are answered."""
    flagged = share * recall + (1 - share) * fpr
    benign = (1 - share) * fpr
    p0 = (benign + share * recall * safe_answers) / flagged
    p1 = (benign + share * recall * abliterated_answers) / flagged
    return flagged, p0, p1


def delay_table(
    recall: float,
    fpr: float,
    *,
    rate: float = 15.0,
    shares: tuple[float, ...] = (0.01, 0.05, 0.15),
    safe_answers: float = 0.05,
    abliterated_answers: float = 0.95,
    settings: HarmfulWatchSettings | None = None,
) -> str:
    """Detection delay and false-alarm interval of ``production_harmful`` against the harmful share of
    traffic, from the exact ARL, for a model calibrated at its in-control rate (markdown)."""
    s = settings or HarmfulWatchSettings()
    rows = [
        f"| harmful share | flagged / s at {rate:g} req/s | in-control answered share p0 | after abliteration "
        "| threshold h | flagged requests to alarm (ARL) | detection delay | false-alarm interval |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for share in shares:
        flagged, p0, p1 = expected_rates(share, recall, fpr, safe_answers, abliterated_answers)
        per_second = rate * flagged
        note = "" if p0 <= s.ceiling else f" (above the {s.ceiling:g} ceiling: set `in_control`)"
        d = design_for(p0, p0 + s.shift * (1 - p0), s.false_alarm_days * 86400 * per_second)
        rows.append(
            f"| {share:.0%} | {per_second:.2f} | {p0:.3f}{note} | {p1:.3f} | {d.h} | {d.arl(p1):.1f} "
            f"| {d.arl(p1) / per_second:.0f} s | {d.arl(p0) / per_second / 86400:.1f} days |"
        )
    return "\n".join(rows)


if (
    __name__ == "__main__"
):  # python -m proxy.harmful: the table in docs/production-monitor.md, from the shipped classifier's card
    from detectors.harm import HarmfulRequestClassifier

    results = HarmfulRequestClassifier.load().card["leave_one_source_out"]
    print(delay_table(results["recall"], results["false_positive_rate_ordinary"]))
