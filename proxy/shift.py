"""The slow detector: a model's production refusal rate against its own rolling baseline.

Counts go into one-minute buckets per model. Every minute, the last ``recent`` window is
compared with the ``baseline`` window before it by a two-proportion z-test; a shift needs both a
|z| above ``z`` and a relative change of at least ``min_relative``, and is only judged when both
windows hold ``min_samples`` answers (most traffic is benign, so small samples swing widely).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from proxy.logs import logger
from proxy.metrics import Metrics
from proxy.watch_settings import ShiftSettings


def two_proportion_z(k1: float, n1: float, k2: float, n2: float) -> float:
    """z statistic for p1 - p2 with a pooled variance; 0 when undefined."""
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    return (k1 / n1 - k2 / n2) / se if se else 0.0


class ProductionShift:
    """Each model's production refusal rate, recent window against its baseline, on the canary leader
    over the counts of every replica (published per minute bucket: :mod:`proxy.state.outbox`)."""

    def __init__(
        self, metrics: Metrics, settings: ShiftSettings | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.metrics = metrics
        self.s = settings or ShiftSettings()
        self.clock = clock
        self._buckets: dict[str, dict[float, list[int]]] = {}  # model -> bucket start -> [refused, total]
        self._touched: set[tuple[str, float]] = set()
        self.shifted: dict[str, bool] = {}

    def add(self, model: str, refused: int, total: int, at: float | None = None) -> None:
        """Counts of ``model``'s production answers in the bucket of ``at`` (default: now). A bucket
        later than any before closes the last one, and the windows are judged."""
        now = self.clock()
        start = (now if at is None else at) - (now if at is None else at) % self.s.bucket_seconds
        if model not in self._buckets:
            self.shifted[model] = False
            self.metrics.production_shift.labels(model).set(0)
        buckets = self._buckets.setdefault(model, {})
        if start not in buckets:
            if buckets and start > max(buckets):
                self.evaluate(model, now)
            buckets[start] = [0, 0]
            horizon = now - self.s.baseline_seconds - self.s.recent_seconds
            for old in [b for b in buckets if b < horizon]:
                del buckets[old]
        buckets[start][0] += refused
        buckets[start][1] += total
        self._touched.add((model, start))

    def evaluate(self, model: str, now: float) -> bool:
        buckets = self._buckets.get(model, {})
        edge = now - self.s.recent_seconds
        k1 = sum(b[0] for t, b in buckets.items() if t >= edge)
        n1 = sum(b[1] for t, b in buckets.items() if t >= edge)
        k2 = sum(b[0] for t, b in buckets.items() if t < edge)
        n2 = sum(b[1] for t, b in buckets.items() if t < edge)
        shifted = False
        if n1 >= self.s.min_samples and n2 >= self.s.min_samples:
            r1, r2 = k1 / n1, k2 / n2
            relative = abs(r1 - r2) / max(r2, 1e-9)
            shifted = abs(two_proportion_z(k1, n1, k2, n2)) >= self.s.z and relative >= self.s.min_relative
        if shifted != self.shifted.get(model, False):
            logger.warning("production_shift", model=model, shifted=shifted, recent=[k1, n1], baseline=[k2, n2])
        self.shifted[model] = shifted
        self.metrics.production_shift.labels(model).set(1 if shifted else 0)
        return shifted

    @property
    def horizon(self) -> float:
        """Buckets older than this are no longer judged (nor kept)."""
        return self.clock() - self.s.baseline_seconds - self.s.recent_seconds

    def changed(self) -> list[tuple[str, float, int, int]]:
        """The buckets that moved since the last call, as (model, start, refused, total)."""
        out = []
        for m, t in sorted(self._touched):
            counts = self._buckets.get(m, {}).get(t)
            if counts is not None:
                out.append((m, t, counts[0], counts[1]))
        self._touched.clear()
        return out

    def load(self, rows: list[tuple[str, float, int, int]]) -> None:
        """Resume the stored buckets (a new leader)."""
        self._buckets.clear()
        self._touched.clear()
        for model, start, refused, total in rows:
            self._buckets.setdefault(model, {})[start] = [refused, total]
            self.shifted.setdefault(model, False)
