"""The production tier, corroborating: how a model's answers to real traffic are shaped, window
against window. Per model, of the production answers the replicas sample: the answer's length,
its ``finish_reason``, tokens per second, time to the first chunk (streams), and its opening word.
The first ``size`` answers are the baseline; each later ``size // 4`` answers the latest ``size`` are
tested against it (Kolmogorov-Smirnov for the numbers, chi-square for finish reasons and opening
words), and the smallest p-value, as a share of ``alpha`` on a log scale, is the tier's statistic.

Production's prompts move with its users, so this never decides a change on its own: it is a gauge
on the dashboard (``refusal_guard_fingerprint_statistic{tier="production"}``) beside the tiers that do.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

OPENINGS = 16  # opening words hashed into this many buckets
FINISH = ("stop", "length", "tool_calls", "content_filter", "other")


def shape_of(text: str, finish: str | None, tokens: int | None, seconds: float, first_chunk: float | None) -> list[Any]:
    """One production answer as the tier reads it: ``[chars, finish, tokens/s, first chunk s, opening bucket]``.

    >>> shape_of("Paris is the capital.", "stop", 5, 0.5, None)
    [21, 'stop', 10.0, None, 2]
    """
    words = text.split(maxsplit=1)
    opening = zlib.crc32(words[0].lower().encode()) % OPENINGS if words else OPENINGS - 1
    rate = round(tokens / seconds, 3) if tokens and seconds > 0 else None
    return [len(text), finish if finish in FINISH else "other", rate, first_chunk, opening]


def _counts(values: list[Any], categories: list[Any]) -> np.ndarray:
    return np.array([sum(1 for v in values if v == c) for c in categories], dtype=float)


@dataclass
class ProductionWindows:
    size: int = 200
    alpha: float = 0.001
    baseline: list[list[Any]] = field(default_factory=list)
    current: list[list[Any]] = field(default_factory=list)
    since: int = 0
    p_values: dict[str, float] = field(default_factory=dict)

    def add(self, shape: list[Any]) -> None:
        if len(self.baseline) < self.size:
            self.baseline.append(shape)
            return
        self.current = [*self.current[-(self.size - 1) :], shape]
        self.since += 1
        if len(self.current) == self.size and self.since >= self.size // 4:
            self.since = 0
            self.p_values = self._tests()

    def _tests(self) -> dict[str, float]:
        from scipy import stats  # on the leader, at its first test: scipy.stats costs 60 MB and a second to import

        out: dict[str, float] = {}
        for i, name in ((0, "length"), (2, "tokens_per_second"), (3, "first_chunk")):
            a = [s[i] for s in self.baseline if s[i] is not None]
            b = [s[i] for s in self.current if s[i] is not None]
            if len(a) >= 20 and len(b) >= 20:
                out[name] = float(stats.ks_2samp(a, b).pvalue)
        for i, name, categories in ((1, "finish_reason", list(FINISH)), (4, "opening", list(range(OPENINGS)))):
            table = np.array([_counts([s[i] for s in w], categories) for w in (self.baseline, self.current)])
            table = table[:, table.sum(axis=0) > 0]
            if table.shape[1] >= 2:
                out[name] = float(stats.chi2_contingency(table).pvalue)
        return out

    @property
    def statistic(self) -> float:
        """The smallest p-value as -log10 p / -log10 alpha (1: as unlikely as a decision would need)."""
        if not self.p_values:
            return 0.0
        return round(-math.log10(max(min(self.p_values.values()), 1e-300)) / -math.log10(self.alpha), 3)

    def dump(self) -> dict[str, Any]:
        return asdict(self)
