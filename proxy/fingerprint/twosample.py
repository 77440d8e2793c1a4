"""The statistical tier: are the model's answers to canaries still drawn from the baseline's
distribution? A kernel two-sample test (MMD, Gretton et al. 2012; Model Equality Testing, Gao et al.
2025, is the reference for its use on language models) between the first ``size`` answers and each
later window of ``size``, on a sketch of each answer (:func:`sketch`), without repeating a prompt.

Canaries only: their prompts are drawn from fixed suites in fixed proportions, so their answers'
distribution moves only when the model does (production's prompts move with its users). Windows are
kept per sampling setting (temperature, top_p), and only windows with the same setting are compared.

The test is a permutation test with ``permutations`` relabellings, all as one matrix product; a
window is tested each ``size // 2`` new answers, and the alarm is a p-value below ``alpha``. In control
that is one false alarm per about ``size / 2 / alpha`` answers (25,000 at the defaults: a 50-answer
window, alpha 0.001). The samples needed to see a change are in the power table (docs/fingerprint.md).
"""

from __future__ import annotations

import math
import string
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

BUCKETS = 32  # hashed word buckets in a sketch
_PUNCT = frozenset(string.punctuation)


def sketch(text: str) -> list[float]:
    """An answer as a point: its length, its style (line breaks, digits, capitals, punctuation, list
    lines), and which words it uses (each word's CRC-32 into one of :data:`BUCKETS` buckets, as shares).

    >>> s = sketch("Sure! Here are 2 steps:\\n- one\\n- two")
    >>> len(s), round(s[0], 3)
    (40, 3.583)
    """
    chars = max(len(text), 1)
    words = text.lower().split()
    lines = [ln.lstrip() for ln in text.splitlines() if ln.strip()]
    listed = sum(1 for ln in lines if ln[:1] in "-*•" or ln[:2].rstrip(".)").isdigit())
    style = [
        math.log1p(len(text)),
        math.log1p(len(words)),
        sum(len(w) for w in words) / max(len(words), 1),
        text.count("\n") / chars,
        sum(c.isdigit() for c in text) / chars,
        sum(c.isupper() for c in text) / chars,
        sum(c in _PUNCT for c in text) / chars,
        listed / max(len(lines), 1),
    ]
    buckets = [0.0] * BUCKETS
    for w in words:
        buckets[zlib.crc32(w.strip(string.punctuation).encode()) % BUCKETS] += 1.0
    return [
        round(v, 4) for v in (*style, *(b / max(len(words), 1) for b in buckets))
    ]  # 4 places: small rows in the store


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int, rng: np.random.Generator) -> tuple[float, float]:
    """``(MMD^2, p-value)`` of samples ``x`` and ``y`` (rows), Gaussian kernel, median-distance bandwidth,
    features standardised by the pooled spread (all symmetric in the labels, as a permutation test needs)."""
    z = np.vstack([x, y])
    z = z / np.maximum(z.std(axis=0), 1e-6)
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    width = float(np.median(d2[np.triu_indices(len(z), 1)])) or 1.0
    k = np.exp(-d2 / width)
    n, m = len(x), len(y)
    labels = np.concatenate([np.full(n, 1.0 / n), np.full(m, -1.0 / m)])
    observed = float(labels @ k @ labels)
    shuffled = rng.permuted(np.tile(labels, (permutations, 1)), axis=1)  # each row a relabelling
    null = np.einsum("ij,ij->i", shuffled @ k, shuffled)
    return observed, float((1 + np.sum(null >= observed)) / (1 + permutations))


@dataclass
class AnswerWindows:
    """One model's canary answers under one sampling setting: a baseline window and a sliding one."""

    size: int = 50
    alpha: float = 0.001
    permutations: int = 2000
    baseline: list[list[float]] = field(default_factory=list)
    current: list[list[float]] = field(default_factory=list)
    since: int = 0  # answers since the last test
    p_value: float | None = None
    tests: int = 0

    def add(self, point: list[float]) -> bool:
        """Take one answer's sketch; true when this answer's test raises the alarm."""
        if len(self.baseline) < self.size:
            self.baseline.append(point)
            return False
        self.current = [*self.current[-(self.size - 1) :], point]
        self.since += 1
        if len(self.current) < self.size or self.since < self.size // 2:
            return False
        self.since = 0
        self.tests += 1
        rng = np.random.default_rng(self.tests)  # a fixed relabelling per test: the same answers, the same p
        _, p = mmd_test(np.array(self.baseline), np.array(self.current), self.permutations, rng)
        before, self.p_value = self.alarmed, p
        return not before and self.alarmed

    @property
    def alarmed(self) -> bool:
        return self.p_value is not None and self.p_value < self.alpha

    @property
    def statistic(self) -> float:
        """-log10 p as a share of -log10 alpha: 1 at the alarm."""
        if self.p_value is None:
            return 0.0
        return round(math.log10(self.p_value) / math.log10(self.alpha), 3)

    def dump(self) -> dict[str, Any]:
        return asdict(self)
