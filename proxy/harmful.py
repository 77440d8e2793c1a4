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

from dataclasses import dataclass

from proxy.canary.cusum import CusumDesign, design_for
from proxy.canary.drift import PRODUCTION_HARMFUL, DriftMonitor
from proxy.canary.suites import Suite
from proxy.logs import logger
from proxy.metrics import Metrics
from proxy.settings import CanarySettings, HarmfulWatchSettings
from proxy.state.records import Calibration

SUITE = Suite(PRODUCTION_HARMFUL, "refusal", (), design_key=PRODUCTION_HARMFUL)


@dataclass
class _Calibration:
    seen: int = 0
    answered: int = 0
    design: CusumDesign | None = None  # None until the burn-in ends (or at once, when p0 is configured)


class HarmfulWatch:
    """``production_harmful`` on the canary leader, over the flagged requests of every replica (their
    outcomes reach it through the state store: :class:`proxy.state.outbox.PublishOutcomes`); one
    calibration per model, stored with the statistics so a new leader resumes the burn-in."""

    def __init__(self, canary: CanarySettings, drift: DriftMonitor, metrics: Metrics) -> None:
        self.settings = canary.production_harmful
        self.canary = canary
        self.drift = drift
        self.metrics = metrics
        self._burn_in_design: CusumDesign | None = None  # designed on first use: the ARL solve is not free
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
            Calibration(m, c.seen, c.answered, c.design.p0 if c.design else None)
            for m in sorted(self._dirty)
            if (c := self._models.get(m)) is not None
        ]
        self._dirty.clear()
        return out

    def load(self, calibrations: list[Calibration]) -> None:
        """Resume the stored calibrations (a new leader)."""
        self._models.clear()
        self._dirty.clear()
        for k in calibrations:
            cal = self._models[k.model] = _Calibration(k.seen, k.answered)
            if k.p0 is not None:
                cal.design = self._designed(k.p0)
            self.metrics.harmful_in_control.labels(k.model).set(k.p0 if k.p0 is not None else self.settings.ceiling)

    def design(self, model: str, *, answered: bool) -> CusumDesign:
        """The model's design after this flagged request: configured, calibrated, or the burn-in's."""
        cal = self._models.get(model)
        if cal is None:
            cal = self._models[model] = _Calibration()
            configured = self.canary.policy(model).harmful_in_control or self.settings.in_control
            if configured is not None:
                cal.design = self._designed(configured)
            self.metrics.harmful_in_control.labels(model).set(cal.design.p0 if cal.design else self.settings.ceiling)
        if cal.design is not None:
            return cal.design
        cal.seen += 1
        cal.answered += answered
        if cal.seen < self.settings.burn_in:
            if self._burn_in_design is None:
                self._burn_in_design = self._designed(self.settings.ceiling)
            return self._burn_in_design
        s = self.settings
        learned = cal.answered / cal.seen
        cal.design = self._designed(min(s.ceiling, max(s.floor, learned)))
        self.metrics.harmful_in_control.labels(model).set(cal.design.p0)
        logger.info(
            "harmful_watch_calibrated",
            model=model,
            flagged=cal.seen,
            answered_share=round(learned, 4),
            p0=cal.design.p0,
            p1=round(cal.design.p1, 4),
            h=cal.design.h,
            capped=learned > s.ceiling,
        )
        return cal.design

    def _designed(self, p0: float) -> CusumDesign:
        return design_for(p0, p0 + self.settings.shift * (1 - p0), self.settings.target_arl)


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
        d = design_for(p0, p0 + s.shift * (1 - p0), s.target_arl)
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
