"""The leader's fingerprint: every replica's observations, per model, through each tier, and each
change decided once (:class:`ModelFingerprint`).

The state sync (:mod:`proxy.state.sync`) feeds it the observations the replicas published, in the
order the store took them; its transitions go to the notifier, the audit log and the traces from the
leader alone. What it learned (each fit, each identity, what changed) is written to the store with
the leader's other statistics, so a new leader or a restarted fleet resumes it; followers mirror the
short summary (``/canary/state``, the two gauges).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.canary.notify import Notifier
from proxy.canary.transition import Transition
from proxy.fingerprint.production import ProductionWindows
from proxy.fingerprint.tiers import Identity, TokenFit
from proxy.fingerprint.twosample import AnswerWindows
from proxy.logs import logger
from proxy.metrics import Metrics

TIERS = ("tokenizer", "identity", "statistical")
IDENTITIES = ("model", "system_fingerprint")


@dataclass
class _Model:
    fits: dict[str, TokenFit] = field(default_factory=dict)  # by "endpoint:prompt|completion"
    identities: dict[str, Identity] = field(default_factory=lambda: {name: Identity() for name in IDENTITIES})
    changed: dict[str, dict[str, Any]] = field(default_factory=dict)  # tier -> what changed
    windows: dict[str, AnswerWindows] = field(default_factory=dict)  # by "endpoint sampling"
    production: ProductionWindows = field(default_factory=ProductionWindows)  # corroborating, never decides

    def dump(self) -> bytes:
        return orjson.dumps(
            {
                "fits": {k: f.dump() for k, f in self.fits.items()},
                "identities": {k: i.dump() for k, i in self.identities.items()},
                "changed": self.changed,
                "windows": {k: w.dump() for k, w in self.windows.items()},
                "production": self.production.dump(),
            }
        )

    @classmethod
    def load(cls, raw: str | bytes) -> _Model:
        data = orjson.loads(raw)
        return cls(
            {k: TokenFit.load(f) for k, f in data["fits"].items()},
            {k: Identity(**i) for k, i in data["identities"].items()},
            data["changed"],
            {k: AnswerWindows(**w) for k, w in data.get("windows", {}).items()},
            ProductionWindows(**data["production"]) if "production" in data else ProductionWindows(),
        )

    def summary(self) -> dict[str, Any]:
        """What ``/canary/state`` shows and followers mirror."""
        return {
            "changed": self.changed,
            "tokenizer": {
                k: {"baseline": f.coef is not None, "statistic": round(f.statistic / f.h, 3)}
                for k, f in self.fits.items()
            },
            "identity": {k: i.stable for k, i in self.identities.items()},
            "statistical": {
                k: {"baseline": len(w.baseline) >= w.size, "p_value": w.p_value, "statistic": w.statistic}
                for k, w in self.windows.items()
            },
            "production": {
                "baseline": len(self.production.baseline) >= self.production.size,
                "p_values": self.production.p_values,
                "statistic": self.production.statistic,
            },
            "learning": [k for k, f in self.fits.items() if f.coef is None]
            + [k for k, w in self.windows.items() if len(w.baseline) < w.size],
        }


class ModelFingerprint:
    """Observations in (:meth:`observe`), transitions out; :meth:`changed` and :meth:`load` for the
    store, :meth:`mirror` on followers, :meth:`state` for ``/canary/state``."""

    def __init__(
        self,
        metrics: Metrics,
        notifier: Notifier | None = None,
        observers: Sequence[Callable[[Transition], None]] = (),
        clock: Callable[[], float] = time.time,
        baseline: int = 30,
        window: int = 50,
    ) -> None:
        self.metrics = metrics
        self.notifier = notifier
        self.observers = tuple(observers)
        self.clock = clock
        self.baseline = baseline
        self.window = window
        self.models: dict[str, _Model] = {}  # the leader's live state
        self.shown: dict[str, dict[str, Any]] = {}  # per model summary: the leader's, or the store's
        self._dirty: set[str] = set()
        self._dropped: set[str] = set()

    # -- the leader ------------------------------------------------------------------------------

    def observe(self, event: list[Any]) -> None:
        """One published observation (:data:`proxy.fingerprint.features.FINGERPRINT`)."""
        _, model, endpoint, prompt_x, prompt_y, answer_x, answer_y, reported, system_fingerprint = event[:9]
        point, setting = (event[9], event[10]) if len(event) > 10 else (None, None)  # older replicas: no sketch
        shape = event[11] if len(event) > 11 else None
        state = self.models.get(model)
        if state is None:
            state = self.models[model] = _Model()
            self._gauges(model, changed=(), statistic=0.0)  # a series from the first answer on
        self._dirty.add(model)
        for name, value in (("model", reported), ("system_fingerprint", system_fingerprint)):
            change = state.identities[name].add(value)
            if change is not None:
                self._changed(model, state, "identity", {"field": name, "before": change[0], "after": change[1]})
        for kind, x, y in (("prompt", prompt_x, prompt_y), ("completion", answer_x, answer_y)):
            if x is None or y is None:
                continue
            fit = state.fits.get(key := f"{endpoint}:{kind}")
            if fit is None:  # an answer's text moves with the model's behaviour, a request's does not
                fit = state.fits[key] = TokenFit(baseline=self.baseline, k=0.25 if kind == "prompt" else 0.5)
            if fit.add(x, float(y)):
                expected, observed = fit.last or (0.0, 0.0)
                detail = {
                    "count": f"{kind}_tokens",
                    "api": endpoint,
                    "expected": round(expected, 1),
                    "observed": observed,
                }
                self._changed(model, state, "tokenizer", detail)
        if shape is not None:
            state.production.add(shape)
        if point is not None:
            windows = state.windows.get(key := f"{endpoint} {setting}")
            if windows is None:
                windows = state.windows[key] = AnswerWindows(size=self.window)
            if windows.add(point):
                detail = {"answers": key, "p_value": windows.p_value, "window": windows.size}
                self._changed(model, state, "statistical", detail)

    def rebaseline(self, model: str) -> None:
        """An operator accepts the model now served: every tier learns it afresh."""
        self.models.pop(model, None)
        self.shown.pop(model, None)
        self._dirty.discard(model)
        self._dropped.add(model)
        self._gauges(model, changed=(), statistic=0.0)

    def changed(self) -> tuple[list[tuple[str, str, str]], list[str]]:
        """Since the last call: ``(model, summary, state)`` rows to write, and the models to delete."""
        rows = []
        for model in sorted(self._dirty):
            state = self.models[model]
            summary = self.shown[model] = state.summary()
            self._gauges(model, changed=state.changed, **_statistics(summary))
            rows.append((model, orjson.dumps(summary).decode(), state.dump().decode()))
        dropped = sorted(self._dropped)
        self._dirty, self._dropped = set(), set()
        return rows, dropped

    def load(self, states: dict[str, str]) -> None:
        """A new leader resumes what the store holds; a row it cannot read (another version's) is
        logged and that model's fingerprint learnt afresh: never a failed start."""
        self.models = {}
        for model, raw in states.items():
            try:
                self.models[model] = _Model.load(raw)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                logger.warning("state_unreadable", part="fingerprint", model=model, error=type(exc).__name__)
        self.shown = {model: state.summary() for model, state in self.models.items()}
        self._dirty, self._dropped = set(), set()

    # -- everyone --------------------------------------------------------------------------------

    def mirror(self, summaries: dict[str, str]) -> None:
        """A follower shows what the leader wrote."""
        shown = {model: orjson.loads(raw) for model, raw in summaries.items()}
        for model in self.shown.keys() - shown.keys():  # rebaselined: learning afresh
            self._gauges(model, changed=(), statistic=0.0)
        for model, summary in shown.items():
            if summary != self.shown.get(model):
                self._gauges(model, changed=summary["changed"], **_statistics(summary))
        self.shown = shown

    def state(self) -> dict[str, Any]:
        """``/canary/state``'s ``fingerprint``: per model, each tier's state and what changed."""
        return dict(self.shown)

    def _changed(self, model: str, state: _Model, tier: str, detail: dict[str, Any]) -> None:
        if tier in state.changed:
            return
        state.changed[tier] = detail
        self.metrics.model_changed.labels(model, tier).set(1)
        t = Transition("model_changed", model, tier, self.clock(), detail)
        if self.notifier is not None:
            self.notifier.notify("model_changed", model, tier, detail)
        for observe in self.observers:
            observe(t)

    def _gauges(
        self, model: str, *, changed: Any, statistic: float, statistical: float = 0.0, production: float = 0.0
    ) -> None:
        for tier in TIERS:
            self.metrics.model_changed.labels(model, tier).set(1 if tier in changed else 0)
        self.metrics.fingerprint_statistic.labels(model, "tokenizer").set(statistic)
        self.metrics.fingerprint_statistic.labels(model, "identity").set(1 if "identity" in changed else 0)
        self.metrics.fingerprint_statistic.labels(model, "statistical").set(statistical)
        self.metrics.fingerprint_statistic.labels(model, "production").set(production)


def _statistics(summary: dict[str, Any]) -> dict[str, float]:
    """The tiers' statistics for the gauges, each the largest over its counts or windows."""
    return {
        "statistic": max((f["statistic"] for f in summary["tokenizer"].values()), default=0.0),
        "statistical": max((w["statistic"] for w in summary.get("statistical", {}).values()), default=0.0),
        "production": float(summary.get("production", {}).get("statistic", 0.0)),
    }
