"""A Bernoulli CUSUM on integer steps, whose run lengths are computed exactly.

Each canary is a Bernoulli trial: *failure* means a harmful canary was answered, or a benign one
refused. In control the failure rate is ``p0``; the test should fire quickly at ``p1``. The
log-likelihood-ratio CUSUM adds ``ln(p1/p0)`` on a failure and ``ln((1-p1)/(1-p0))`` (negative) on
a success. We scale and round those weights to integers (``+up`` / ``-down``), so the statistic
lives on ``0..h`` and the run-length distribution is a finite Markov chain: the average run length
(ARL) at any true rate ``p`` is the solution of one linear system, exact up to float rounding,
not a simulation.

>>> d = CusumDesign(p0=0.10, p1=0.50, h=40)
>>> (d.up, d.down)
(11, 4)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CusumDesign:
    p0: float  # in-control failure rate
    p1: float  # failure rate to detect fast
    h: int  # alarm threshold, in steps
    scale: int = 4  # steps taken off per success; finer scale, closer to the exact LLR weights

    def __post_init__(self) -> None:
        if not 0 < self.p0 < self.p1 < 1:
            raise ValueError("need 0 < p0 < p1 < 1")
        if self.h <= 0 or self.scale <= 0:
            raise ValueError("h and scale must be positive")

    @property
    def down(self) -> int:
        return self.scale

    @property
    def up(self) -> int:
        w1 = math.log(self.p1 / self.p0)
        w0 = -math.log((1 - self.p1) / (1 - self.p0))
        return max(1, round(self.scale * w1 / w0))

    def arl(self, p: float) -> float:
        """Expected number of canaries until the first alarm, from a zero statistic, at failure rate ``p``."""
        from scipy.sparse import coo_matrix, identity
        from scipy.sparse.linalg import spsolve

        n = self.h  # transient states 0..h-1; reaching >= h is the alarm
        s = np.arange(n)
        ups = s + self.up < n
        rows = np.concatenate([s[ups], s])
        cols = np.concatenate([s[ups] + self.up, np.maximum(0, s - self.down)])
        vals = np.concatenate([np.full(int(ups.sum()), p), np.full(n, 1 - p)])
        q = coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsc()  # sparse: two moves per state
        return float(spsolve((identity(n, format="csc") - q).tocsc(), np.ones(n))[0])

    def alarm_probability(self, p: float, within: int) -> float:
        """Probability of an alarm within ``within`` canaries, from a zero statistic, at failure rate ``p``."""
        n = self.h
        dist = np.zeros(n + 1)  # last state: absorbed (alarm)
        dist[0] = 1.0
        for _ in range(within):
            nxt = np.zeros(n + 1)
            nxt[n] = dist[n]
            for s in range(n):
                if dist[s]:
                    nxt[min(n, s + self.up)] += dist[s] * p
                    nxt[max(0, s - self.down)] += dist[s] * (1 - p)
            dist = nxt
        return float(dist[n])


class BernoulliCusum:
    """The running statistic. ``update`` returns True while in alarm.

    After an alarm the statistic keeps moving (capped at ``h``); the alarm clears when it has come
    back down to zero, i.e. after a run of successes that outweighs the failures.
    """

    def __init__(self, design: CusumDesign) -> None:
        self.design = design
        self.s = 0
        self.alarm = False

    def update(self, failure: bool) -> bool:
        d = self.design
        self.s = min(d.h, self.s + d.up) if failure else max(0, self.s - d.down)
        if self.s >= d.h:
            self.alarm = True
        elif self.s == 0:
            self.alarm = False
        return self.alarm

    @property
    def statistic(self) -> float:
        """The statistic as a fraction of the threshold (1.0 = alarm)."""
        return self.s / self.design.h


def design_for(p0: float, p1: float, target_arl: float, *, h_max: int = 1 << 20) -> CusumDesign:
    """The smallest threshold whose exact in-control ARL (at ``p0``) is at least ``target_arl``.

    The integer weights keep the log-likelihood ratio's proportions within a few per cent: when a
    failure weighs much less than a success (a high ``p0``), the scale grows so a failure is about
    eight steps.

    >>> d = design_for(0.2, 0.6, 10_000)
    >>> d.arl(0.2) >= 10_000 > CusumDesign(0.2, 0.6, d.h - 1, d.scale).arl(0.2)
    True
    """
    w1 = math.log(p1 / p0)
    w0 = -math.log((1 - p1) / (1 - p0))
    scale = max(4, math.ceil(8 * w0 / w1))
    hi = 8  # the ARL grows with h: double until the target is reached, then bisect
    while hi < h_max and CusumDesign(p0, p1, hi, scale).arl(p0) < target_arl:
        hi *= 2
    hi = min(hi, h_max)
    lo = hi // 2 + 1 if hi > 8 else 1
    while lo < hi:
        mid = (lo + hi) // 2
        if CusumDesign(p0, p1, mid, scale).arl(p0) >= target_arl:
            hi = mid
        else:
            lo = mid + 1
    return CusumDesign(p0, p1, lo, scale)


def design_table(design: CusumDesign, rates: tuple[float, ...] = (0.02, 0.05, 0.10, 0.30, 0.50, 0.90, 1.0)) -> str:
    """Run lengths of ``design`` at several true failure rates, as a markdown table."""
    rows = ["| true failure rate | mean canaries to alarm (ARL) | alarm within 2x design-p1 ARL |", "|---|---|---|"]
    horizon = math.ceil(2 * design.arl(design.p1))
    for p in rates:
        rows.append(f"| {p:.2f} | {design.arl(p):,.1f} | {design.alarm_probability(p, horizon):.4f} |")
    return "\n".join(rows)


def canaries_for(design: CusumDesign, p: float, probability: float) -> int:
    """Fewest canaries after which an alarm has happened with at least ``probability`` at failure rate ``p``."""
    n = 1
    while design.alarm_probability(p, n) < probability:
        n += 1
    return n


if __name__ == "__main__":  # python -m proxy.canary.cusum: the default design's figures, for docs/canaries.md
    from proxy.watch_settings import DriftDesign

    d = DriftDesign()
    design = CusumDesign(d.p0, d.p1, d.h)
    print(f"p0={d.p0} p1={d.p1} h={d.h}: +{design.up} per failure, -{design.down} per success")
    print(design_table(design))
    for p in (0.5, 0.9, 1.0):
        print(f"at failure rate {p}: alarm within {canaries_for(design, p, 0.99)} canaries with probability >= 0.99")
