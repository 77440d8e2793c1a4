"""The slow detector: a model's production refusal rate against its own rolling baseline.

Counts go into one-minute buckets per model. Every minute, the last ``recent`` window is
compared with the ``baseline`` window before it by a two-proportion z-test; a shift needs both a
|z| above ``z`` and a relative change of at least ``min_relative``, and is only judged when both
windows hold ``min_samples`` answers (most traffic is benign, so small samples swing widely).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from proxy.exchange import Exchange
from proxy.logs import logger
from proxy.metrics import Metrics
from proxy.settings import ShiftSettings


def two_proportion_z(k1: float, n1: float, k2: float, n2: float) -> float:
    """z statistic for p1 - p2 with a pooled variance; 0 when undefined."""
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    return (k1 / n1 - k2 / n2) / se if se else 0.0


class ProductionShift:
    """A pipeline stage: each model's production refusal rate, recent window against its baseline."""

    def __init__(
        self, metrics: Metrics, settings: ShiftSettings | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.metrics = metrics
        self.s = settings or ShiftSettings()
        self.clock = clock
        self._buckets: dict[str, deque[list[float]]] = {}  # model -> [bucket start, refused, total]
        self.shifted: dict[str, bool] = {}

    def __call__(self, ex: Exchange) -> None:
        """Count a classified production answer."""
        if ex.traffic != "production" or not ex.verdicts:
            return
        self.add(ex.model_label, sum(v.refused for v in ex.verdicts), len(ex.verdicts))

    def add(self, model: str, refused: int, total: int) -> None:
        now = self.clock()
        start = now - now % self.s.bucket_seconds
        if model not in self._buckets:
            self.shifted[model] = False
            self.metrics.production_shift.labels(model).set(0)
        q = self._buckets.setdefault(model, deque())
        if not q or q[-1][0] != start:
            if q:
                self.evaluate(model, now)
            q.append([start, 0, 0])
            horizon = now - self.s.baseline_seconds - self.s.recent_seconds
            while q and q[0][0] < horizon:
                q.popleft()
        q[-1][1] += refused
        q[-1][2] += total

    def evaluate(self, model: str, now: float) -> bool:
        q = self._buckets.get(model, deque())
        edge = now - self.s.recent_seconds
        k1 = sum(b[1] for b in q if b[0] >= edge)
        n1 = sum(b[2] for b in q if b[0] >= edge)
        k2 = sum(b[1] for b in q if b[0] < edge)
        n2 = sum(b[2] for b in q if b[0] < edge)
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
