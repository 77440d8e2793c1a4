"""A risk-adjusted Bernoulli CUSUM (Steiner, Cook, Farewell and Treasure, 2000) on integer steps, whose
run lengths are computed exactly for the traffic mix it was designed on.

Each production answer is one trial: *answered* (the detector's ``compliance``) or refused. How likely
a refusal is depends on the request, so every request's cell (:mod:`proxy.disposition.baseline`)
carries its own in-control refusal probability ``r`` and an alternative ``r1``: the refusals above
the model's floor (its refusals of ordinary requests) divided by ``factor``, as abliteration removes
the refusals of harmful requests and leaves a model's quirks. The statistic adds the log-likelihood
ratio of each answer,

    answered: ln((1 - r1) / (1 - r))        refused: ln(r1 / r)

so a cell the model always refused weighs heavily when answered, a cell at the floor weighs nothing
(an upstream gains nothing by abliterating there), and a traffic mix that shifts between cells moves
nothing. Weights are scaled and rounded to integer steps (conservatively: :func:`_steps`), so with the cells' in-control mix the
statistic on ``0..h`` is a finite Markov chain and the average run length under any refusal
probabilities is one banded linear solve, not a simulation.

>>> d = design_for(r=[0.01, 0.98], r1=[0.01, 0.25], mix=[0.9, 0.1], target_arl=1e5)
>>> d.arl(d.r) >= 1e5 > RiskDesign(d.r, d.r1, d.mix, d.h - 1, d.unit).arl(d.r)
True
>>> d.delay < 1000
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

RESOLUTION = 50  # the largest weight is this many steps (finer changes the run lengths by under 2 %)
MAX_STEPS = 4096  # the largest threshold in steps: past it, coarser steps


def alternative(r: Sequence[float], floor: float, factor: float, spread: float) -> tuple[float, ...]:
    """Per cell, the refusal probability once the refusals above ``floor`` are divided by ``factor``. A
    cell within ``spread`` of the floor keeps its own (it weighs nothing): there the refusals above
    the floor are ordinary requests' of that band, which an abliteration leaves.

    >>> [round(p, 3) for p in alternative([0.01, 0.03, 0.81], floor=0.01, factor=4.0, spread=0.05)]
    [0.01, 0.03, 0.21]
    """
    return tuple(p if p - floor < spread else floor + (p - floor) / factor for p in r)


@dataclass(frozen=True)
class RiskDesign:
    r: tuple[float, ...]  # per cell: the in-control probability of a refusal
    r1: tuple[float, ...]  # per cell: the alternative the design detects fast
    mix: tuple[float, ...]  # per cell: its share of the traffic the design was made for
    h: int  # alarm threshold, in steps
    unit: float  # nats per step

    def __post_init__(self) -> None:
        if not (len(self.r) == len(self.r1) == len(self.mix)) or not self.r:
            raise ValueError("one in-control probability, one alternative and one mix share per cell")
        if not all(0 < p < 1 for p in (*self.r, *self.r1)) or self.h <= 0 or self.unit <= 0:
            raise ValueError("need probabilities in (0, 1), h > 0, unit > 0")

    @cached_property
    def steps(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Per cell: (steps up on an answer, steps down on a refusal)."""
        return _steps(self.r, self.r1, self.unit)

    @cached_property
    def delay(self) -> float:
        """Expected answers until the alarm when every cell is at its alternative."""
        return self.arl(self.r1)

    def arl(self, refused: Sequence[float]) -> float:
        """Expected answers until the first alarm, from a zero statistic, when each cell is refused with
        probability ``refused`` (``self.r``: in control), at the design's mix (``inf`` when the
        statistic cannot reach ``h``). The chain on ``0..h-1`` moves at most one cell's step up or down,
        so ``(I - P) L = 1`` is one banded solve."""
        from scipy.linalg import LinAlgError, solve_banded

        n = self.h  # transient states 0..h-1
        ups, downs = self.steps
        if not any(up for up, w in zip(ups, self.mix, strict=True) if w > 0):
            return math.inf  # nothing moves the statistic up
        lower, upper = max(downs), max(ups)
        ab = np.zeros((lower + upper + 1, n))  # ab[upper + i - j, j] = (I - P)[i, j]
        ab[upper] = 1.0
        s = np.arange(n)
        total = sum(self.mix)
        for p, w, up, down in zip(refused, self.mix, ups, downs, strict=True):
            if w <= 0:
                continue
            stay = s[s + up < n]  # an answer that does not reach h
            np.subtract.at(ab, (np.full_like(stay, upper - up), stay + up), w * (1 - p) / total)
            to = np.maximum(0, s - down)  # a refusal, clamped at zero
            np.subtract.at(ab, (upper + s - to, to), w * p / total)
        try:
            with np.errstate(all="ignore"):
                arl = float(solve_banded((lower, upper), ab, np.ones(n), check_finite=False)[0])
        except LinAlgError:
            return math.inf
        return arl if math.isfinite(arl) and arl > 0 else math.inf


def _weights(r: Sequence[float], r1: Sequence[float]) -> list[tuple[float, float]]:
    """Per cell: (the weight of an answer, minus the weight of a refusal), in nats (both >= 0)."""
    return [(math.log((1 - b) / (1 - a)), math.log(a / b)) for a, b in zip(r, r1, strict=True)]


def _steps(r: Sequence[float], r1: Sequence[float], unit: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """An answer's weight rounded down, a refusal's up: every cell keeps a negative expected step in
    control, whatever the mix (to the nearest, a cell of small weights could drift up on its own and
    an hour heavy in it raise an alarm the mix it was designed on never would)."""
    weights = _weights(r, r1)
    eps = 1e-9  # a weight that is a whole number of steps stays one
    return (
        tuple(math.floor(u / unit + eps) for u, _ in weights),
        tuple(math.ceil(d / unit - eps) for _, d in weights),
    )


def design_for(r: Sequence[float], r1: Sequence[float], mix: Sequence[float], target_arl: float) -> RiskDesign:
    """The smallest threshold whose exact in-control average run length, at ``mix``, is at least
    ``target_arl`` answers. Thresholds stay under :data:`MAX_STEPS` steps: past that the step is
    coarsened (each doubling of the threshold in nats doubles the step), so a design takes
    milliseconds whatever the target."""
    r = tuple(min(0.999, max(0.001, float(p))) for p in r)
    r1 = tuple(min(p, max(0.0005, float(b))) for p, b in zip(r, r1, strict=True))  # refusing less, or no weight
    mix = tuple(float(w) for w in mix)
    unit = max(max(w) for w in _weights(r, r1)) / RESOLUTION or 1.0
    h = RESOLUTION  # the run length grows with the threshold: double it until the target is reached
    for _ in range(64):
        if RiskDesign(r, r1, mix, h, unit).arl(r) >= target_arl:
            break
        if 2 * h <= MAX_STEPS:
            h *= 2
        else:
            unit *= 2
    lo, hi = 1, h  # then the smallest threshold, in these steps, that reaches it
    while lo < hi:
        mid = (lo + hi) // 2
        if RiskDesign(r, r1, mix, mid, unit).arl(r) >= target_arl:
            hi = mid
        else:
            lo = mid + 1
    return RiskDesign(r, r1, mix, lo, unit)


class RiskCusum:
    """The running statistic of one design; ``update`` returns True while in alarm. As the canaries'
    CUSUM: capped at ``h`` in alarm, cleared when back at zero."""

    def __init__(self, design: RiskDesign, s: int = 0, alarm: bool = False) -> None:
        self.design = design
        self.s = s
        self.alarm = alarm

    def update(self, cell: int, answered: bool) -> bool:
        ups, downs = self.design.steps
        self.s = min(self.design.h, self.s + ups[cell]) if answered else max(0, self.s - downs[cell])
        if self.s >= self.design.h:
            self.alarm = True
        elif self.s == 0:
            self.alarm = False
        return self.alarm

    def redesign(self, design: RiskDesign) -> None:
        """A new baseline: the statistic keeps its share of the way to the threshold (in nats, a lower
        new threshold would raise an alarm no answer called for)."""
        self.s = self.s * design.h // self.design.h
        self.design = design

    @property
    def statistic(self) -> float:
        return self.s / self.design.h
