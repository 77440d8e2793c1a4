"""Served model changed: the tiers of a behavioural fingerprint that need no probe of their own.

A host can swap the served model for one that refuses just as often (a cheaper model, another
family behind the same name): every refusal metric stays flat. Each answer says things about the
model that produced it, and the proxy reads them from every exchange it already has (production and
canaries alike), per model:

- **tokenizer** (near-deterministic): ``usage.prompt_tokens`` follows from the request as sent (its
  text, its messages, the API) through the model's tokenizer and chat template, and
  ``usage.completion_tokens`` from the answer's text. Over a baseline of answers the proxy fits each
  count by least squares on text features (:func:`text_features`: characters, words, symbols,
  non-ASCII bytes, messages); afterwards an answer whose count is off that fit by more than the
  baseline's own relative spread is a mark, and a CUSUM of marks (:class:`TokenFit`) alarms after
  four in a row for prompts, six for completions (an answer's text moves with the model's behaviour,
  so more of its counts stray). A change of tokenizer or template moves every later request off the
  fit. The completion side sees only large changes (one token per 4 bytes against one per word:
  74 % of answers marked); a template change shows on every prompt.
- **identity**: the response's ``model`` and ``system_fingerprint``: once a value was seen three
  answers in a row, another value three answers in a row is a change, with before and after.

A change is a transition ``model_changed`` (to the notifier, the audit log and the traces, with its
tier and what changed) and ``refusal_guard_model_changed{model,tier}`` is 1 until an operator pins a
new baseline (``POST /admin/fingerprint/MODEL/baseline``). State is this replica's (each replica fits
the traffic it sees); the statistical tier over the answers themselves is not here yet.
"""

from __future__ import annotations

import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from proxy.canary.notify import Notifier
from proxy.canary.transition import Transition
from proxy.exchange import Exchange
from proxy.extract import answers_from_body, answers_from_stream
from proxy.facts import facts
from proxy.metrics import Metrics

TIERS = ("tokenizer", "identity")
_NOT_SYMBOLS = str.maketrans("", "", string.ascii_letters + string.digits + string.whitespace)  # deleted


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts / blocks
        return " ".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return ""


def text_features(texts: Sequence[str], messages: int) -> list[float]:
    """What a token count follows from: a constant, the messages (template), characters, words,
    symbols, and the bytes beyond one per character in UTF-8 (non-Latin text tokenizes otherwise).

    >>> text_features(["Hi, you!"], 1), text_features(["café"], 1)[-1]
    ([1.0, 1.0, 8.0, 2.0, 2.0, 0.0], 1.0)
    """
    joined = "\n".join(texts)
    non_ascii = 0 if joined.isascii() else len(joined.encode("utf-8", "surrogatepass")) - len(joined)
    words = len(joined.split())  # str methods, not regexes: this runs on every exchange, in the event loop
    symbols = len(joined.translate(_NOT_SYMBOLS))
    return [1.0, float(messages), float(len(joined)), float(words), float(symbols), float(non_ascii)]


def request_features(endpoint: str, request: dict[str, Any]) -> list[float] | None:
    """The request's text as the model's template sees it: every message (and Anthropic's ``system``)."""
    if endpoint in ("chat", "messages"):
        msgs = [m for m in request.get("messages") or [] if isinstance(m, dict)]
        texts = [_text(m.get("content")) for m in msgs]
        if endpoint == "messages" and request.get("system"):
            texts.insert(0, _text(request["system"]))
            return text_features(texts, len(msgs) + 1)
        return text_features(texts, len(msgs))
    if endpoint in ("completions", "responses"):
        prompt = request.get("prompt") if endpoint == "completions" else request.get("input")
        return text_features([_text(prompt)], 1) if isinstance(prompt, str | list) else None
    return None


@dataclass
class TokenFit:
    """A token count against text features: least squares over a baseline of answers, then a CUSUM of
    answers off the fit (``k`` per answer in control, alarm at ``h``: four marks in a row).

    The features only approximate a real tokenizer, and the content of answers moves with the model's
    behaviour (an abliterated model writes lists and code where it refused), so an answer is a mark
    only when its count is off by more than the baseline's own *relative* spread allows
    (:meth:`tolerance_for`). An answer the baseline never spanned (two messages where every baseline
    request had one, the first non-ASCII text) is not judged: the fit would extrapolate. While the
    fit is in control it joins the baseline instead, up to ``4 * baseline`` answers.
    """

    baseline: int = 30
    k: float = 0.25
    h: float = 3.0
    xs: list[list[float]] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)
    coef: list[float] | None = None
    relative: float = 0.0  # a count may be off by this share of its expected value
    statistic: float = 0.0
    last: tuple[float, float] | None = None  # (expected, observed) of the latest answer
    _scale: list[float] = field(default_factory=list)
    _off_span: list[list[float]] = field(default_factory=list)  # I - V^T V: what the baseline never spanned

    def add(self, x: list[float], y: float) -> bool:
        """Take one answer; true when this answer raises the alarm."""
        if self.coef is None or not self._spanned(x):
            if self.coef is None or (self.statistic == 0.0 and len(self.ys) < 4 * self.baseline):
                self._learn(x, y)
            return False
        expected = sum(c * v for c, v in zip(self.coef, x, strict=True))
        self.last = (expected, y)
        mark = abs(y - expected) > self.tolerance_for(expected)
        before = self.statistic
        self.statistic = max(0.0, self.statistic + (1.0 if mark else 0.0) - self.k)
        return before < self.h <= self.statistic

    def tolerance_for(self, expected: float) -> float:
        """Two tokens, or the baseline's largest relative miss with half as much again (at least 2 %)."""
        return max(2.0, self.relative * max(expected, 1.0))

    def _spanned(self, x: list[float]) -> bool:
        scaled = [v / d for v, d in zip(x, self._scale, strict=True)]
        off = [sum(a * b for a, b in zip(row, scaled, strict=True)) for row in self._off_span]
        return sum(v * v for v in off) <= 1e-10 * sum(v * v for v in scaled)

    def _learn(self, x: list[float], y: float) -> None:
        """Fit once the baseline has ``baseline`` answers and ten more distinct requests than the
        directions they span (residuals to learn the spread from: four prompts repeated fit exactly
        and would say nothing about a fifth)."""
        if len(self.ys) >= 4 * self.baseline:  # repeats crowd the baseline: keep one of each
            kept = dict(zip(map(tuple, self.xs), self.ys, strict=True))
            self.xs, self.ys = [list(k) for k in kept], list(kept.values())
        self.xs.append(x)
        self.ys.append(y)
        if len(self.ys) >= self.baseline:
            distinct = len(set(map(tuple, self.xs)))
            if distinct >= int(np.linalg.matrix_rank(np.array(self.xs))) + 10:
                self._fit()

    def _fit(self) -> None:
        a, b = np.array(self.xs), np.array(self.ys)
        coef, *_ = np.linalg.lstsq(a, b, rcond=None)
        self.coef = [float(c) for c in coef]  # applied per answer: plain floats beat numpy on six terms
        relative = np.abs(b - a @ coef) / np.maximum(np.abs(a @ coef), 1.0)
        self.relative = max(0.02, 1.5 * float(np.max(relative)))
        scale = np.maximum(np.linalg.norm(a, axis=0), 1e-12)  # each feature to unit length: one threshold
        _, sv, vt = np.linalg.svd(a / scale, full_matrices=False)
        spanned = vt[sv > 1e-9 * sv[0]]  # orthonormal rows: the directions the baseline's answers span
        self._scale = scale.tolist()
        self._off_span = (np.eye(a.shape[1]) - spanned.T @ spanned).tolist()

    @property
    def alarmed(self) -> bool:
        return self.statistic >= self.h


@dataclass
class Identity:
    """A value an answer reports about its model (``model``, ``system_fingerprint``): stable once seen
    ``confirm`` times in a row; a change once another is seen ``confirm`` times in a row."""

    confirm: int = 3
    stable: str | None = None
    candidate: str | None = None
    run: int = 0

    def add(self, value: str | None) -> tuple[str | None, str] | None:
        """Take one answer's value; ``(before, after)`` when this answer confirms a change."""
        if value is None:
            return None
        if value == self.candidate:
            self.run += 1
        else:
            self.candidate, self.run = value, 1
        if self.run < self.confirm or value == self.stable:
            return None
        before, self.stable = self.stable, value
        return (before, value) if before is not None else None


@dataclass
class _Model:
    fits: dict[str, TokenFit] = field(default_factory=dict)  # by (endpoint, prompt|completion)
    identities: dict[str, Identity] = field(
        default_factory=lambda: {"model": Identity(), "system_fingerprint": Identity()}
    )
    changed: dict[str, dict[str, Any]] = field(default_factory=dict)  # tier -> what changed
    shown: float = 0.0  # the tokenizer statistic last set on the gauge


class ModelFingerprint:
    """The pipeline stage: every judged 2xx exchange (production and canary) read for its model's tiers."""

    def __init__(
        self,
        metrics: Metrics,
        notifier: Notifier | None = None,
        observers: Sequence[Callable[[Transition], None]] = (),
        clock: Callable[[], float] = time.time,
        baseline: int = 30,
    ) -> None:
        self.metrics = metrics
        self.notifier = notifier
        self.observers = tuple(observers)
        self.clock = clock
        self.baseline = baseline
        self.models: dict[str, _Model] = {}

    def __call__(self, ex: Exchange) -> None:
        if ex.status >= 400 or not ex.response or ex.endpoint is None or not ex.model_label:
            return
        state = self.models.get(ex.model_label)
        if state is None:
            state = self.models[ex.model_label] = _Model()
            for tier in TIERS:  # a series from the first answer on: dashboards and alerts see 0, not nothing
                self.metrics.model_changed.labels(ex.model_label, tier).set(0)
                self.metrics.fingerprint_statistic.labels(ex.model_label, tier).set(0)
        said = facts(ex.response, ex.stream)
        for name, value in (("model", said.model), ("system_fingerprint", said.system_fingerprint)):
            change = state.identities[name].add(value)
            if change is not None:
                self._changed(
                    ex.model_label, state, "identity", {"field": name, "before": change[0], "after": change[1]}
                )
        counts = (
            ("prompt", request_features(ex.endpoint, ex.request or {}), said.input_tokens),
            ("completion", self._answer_features(ex), said.output_tokens),
        )
        for kind, x, y in counts:
            if x is None or y is None or (kind == "completion" and ex.response_truncated):
                continue
            fit = state.fits.get(key := f"{ex.endpoint}:{kind}")
            if fit is None:  # an answer's text moves with the model's behaviour, a request's does not
                fit = state.fits[key] = TokenFit(baseline=self.baseline, k=0.25 if kind == "prompt" else 0.5)
            if fit.add(x, float(y)):
                expected, observed = fit.last or (0.0, 0.0)
                detail = {
                    "count": f"{kind}_tokens",
                    "api": ex.endpoint,
                    "expected": round(expected, 1),
                    "observed": observed,
                }
                self._changed(ex.model_label, state, "tokenizer", detail)
        statistic = max((f.statistic / f.h for f in state.fits.values()), default=0.0)
        if statistic != state.shown:  # the gauge only when it moves: this runs on every exchange
            state.shown = statistic
            self.metrics.fingerprint_statistic.labels(ex.model_label, "tokenizer").set(statistic)

    @staticmethod
    def _answer_features(ex: Exchange) -> list[float] | None:
        read = answers_from_stream if ex.stream else answers_from_body
        try:
            answers = read(ex.endpoint or "chat", ex.response)
        except ValueError:
            return None
        if len(answers) != 1 or answers[0].tool_call:  # one choice's text: what completion_tokens counts
            return None
        return text_features([answers[0].text], 1)

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

    def rebaseline(self, model: str) -> bool:
        """An operator accepts the model now served: every tier learns it afresh."""
        known = self.models.pop(model, None) is not None
        for tier in TIERS:
            self.metrics.model_changed.labels(model, tier).set(0)
            self.metrics.fingerprint_statistic.labels(model, tier).set(0)
        return known

    def state(self) -> dict[str, Any]:
        """``/canary/state``'s ``fingerprint``: per model, each tier's state and what changed."""
        out: dict[str, Any] = {}
        for model, s in self.models.items():
            learning = [k for k, f in s.fits.items() if f.coef is None]
            out[model] = {
                "changed": s.changed,
                "tokenizer": {
                    k: {"baseline": f.coef is not None, "statistic": round(f.statistic / f.h, 3)}
                    for k, f in s.fits.items()
                },
                "identity": {k: i.stable for k, i in s.identities.items()},
                "learning": learning,
            }
        return out
