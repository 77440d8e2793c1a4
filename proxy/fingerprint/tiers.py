"""The fingerprint's tiers that need no probe of their own, one answer at a time: a token count
against a fitted tokenizer (:class:`TokenFit`), and a value the answer reports about its model
(:class:`Identity`). Both dump to plain data for the state store and load from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


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

    def dump(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "last"}

    @classmethod
    def load(cls, data: dict[str, Any]) -> TokenFit:
        return cls(**data)


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

    def dump(self) -> dict[str, Any]:
        return asdict(self)
