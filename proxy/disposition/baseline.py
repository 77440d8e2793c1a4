"""A model's own in-control disposition: how many of its production answers were given (not refused),
per *cell* of what the request and the traffic around it show, with the time the counts span.

A cell is a band of the harmful-request score (:data:`EDGES`) crossed with a bin of a *share*
(:data:`SHARES`): the harmful share of the moment as the watch estimates it (each statistic's
covariate, :data:`proxy.disposition.watch.COVARIATES`). The share matters because the score's bands
overlap: the requests just under the classifier's threshold are a mix of ordinary and harmful ones,
and the mix follows the harmful share of the traffic (time of day, an app's users). So a band's
refusals are read as a floor (the model's refusals of ordinary requests: the lowest band's) plus a
part that scales with the share (:meth:`Counts.in_control`):

    refused(band, x) = floor + (refused(band) - floor) * min(1, x / mean x of the band's baseline)

which follows a falling harmful share (fewer refusals expected) and never expects more refusals
than the baseline saw. A cell's own refusals outweigh the formula once it has seen more than
:data:`CELL_PRIOR` answers (the formula holds where the baseline has not been yet).

>>> c = Counts(); [c.add(cell_of(0.95, 0.1), False, 0.1) for _ in range(9)]; c.add(cell_of(0.95, 0.1), True, 0.1)
[None, None, None, None, None, None, None, None, None]
>>> c.total, round(c.refused_share()[band_of(0.95)], 3)
(10.0, 0.889)
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

# band k holds scores in [EDGES[k-1], EDGES[k]): finer just under the classifier's threshold (0.5),
# where the harmful requests it misses lie among ordinary ones
EDGES = (0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.475, 0.5, 0.6, 0.7, 0.8, 0.9)
BANDS = len(EDGES) + 1
SHARES = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32)  # share bins, doubling
MIDS = (0.005, 0.014, 0.028, 0.057, 0.113, 0.226, 0.45)  # a bin's flagged share before it is seen
CELLS = BANDS * (len(SHARES) + 1)
PRIOR = 2.0  # pseudo-answers per band at the pooled share: a band seen rarely leans on the rest
FLOOR_MIN = 30  # answers a band needs to set the floor
MIX_PRIOR = 1.0
CELL_PRIOR = 100.0  # pseudo-answers at the formula's rate: a cell seen often enough has its own


def band_of(score: float) -> int:
    return bisect_right(EDGES, score)


def cell_of(score: float, share: float) -> int:
    return band_of(score) * (len(SHARES) + 1) + bisect_right(SHARES, share)


def _zeros() -> list[float]:
    return [0.0] * CELLS


@dataclass
class Counts:
    answered: list[float] = field(default_factory=_zeros)
    seen: list[float] = field(default_factory=_zeros)
    shares: list[float] = field(default_factory=_zeros)  # the share summed over the cell's answers
    seconds: float = 0.0  # the time the counts span

    def add(self, cell: int, answered: bool, share: float) -> None:
        self.seen[cell] += 1
        self.answered[cell] += answered
        self.shares[cell] += share

    @property
    def total(self) -> float:
        return sum(self.seen)

    def _per_band(self, values: list[float]) -> list[float]:
        k = len(SHARES) + 1
        return [sum(values[b * k : (b + 1) * k]) for b in range(BANDS)]

    def refused_share(self) -> list[float]:
        """Per band, smoothed towards the pooled share by :data:`PRIOR` pseudo-answers."""
        seen, answered = self._per_band(self.seen), self._per_band(self.answered)
        pooled = (sum(seen) - sum(answered) + 1) / (sum(seen) + 2)
        return [(n - a + PRIOR * pooled) / (n + PRIOR) for a, n in zip(answered, seen, strict=True)]

    def floor(self, z: float = 0.0) -> float:
        """The model's refusals of ordinary requests: the lowest refused share of a band seen at least
        :data:`FLOOR_MIN` times (raised by ``z`` standard errors)."""
        refused, seen = self.refused_share(), self._per_band(self.seen)
        bands = [(r, n) for r, n in zip(refused, seen, strict=True) if n >= FLOOR_MIN] or list(
            zip(refused, seen, strict=True)
        )
        r, n = min(bands)
        return min(0.999, max(0.001, r + z * math.sqrt(r * (1 - r) / (n + PRIOR))))  # clamped as cells are

    def in_control(self, z: float = 0.0, floor: float | None = None) -> list[float]:
        """Per cell, the probability of a refusal (see the module's formula), lowered by ``z`` standard
        errors: a design on the lower bound is not led into false alarms by a baseline's noise.
        ``floor``: the model's refusals of ordinary requests when these counts hold none (flagged
        requests only), else :meth:`floor`."""
        refused, seen, shares = self.refused_share(), self._per_band(self.seen), self._per_band(self.shares)
        floor = self.floor() if floor is None else floor
        k = len(SHARES) + 1
        q = []
        for c in range(CELLS):
            b = c // k
            x = self.shares[c] / self.seen[c] if self.seen[c] > 0 else MIDS[c % k]
            mean = shares[b] / seen[b] if seen[b] > 0 else x
            scale = min(1.0, x / mean) if mean > 0 else 1.0
            model = floor + max(0.0, refused[b] - floor) * scale
            n = self.seen[c] + min(CELL_PRIOR, seen[b] + PRIOR)  # what the estimate rests on
            own = (self.seen[c] - self.answered[c] + CELL_PRIOR * model) / (self.seen[c] + CELL_PRIOR)
            q.append(min(0.999, max(0.001, own - z * math.sqrt(own * (1 - own) / n))))
        return q

    def mix(self) -> list[float]:
        """Each cell's share of the answers, with :data:`MIX_PRIOR` pseudo-answers in every cell: a cell
        the baseline never saw still counts in the design (else one answer there could alarm)."""
        total = self.total + MIX_PRIOR * CELLS
        return [(n + MIX_PRIOR) / total for n in self.seen]

    def rate(self) -> float:
        """Answers per second."""
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def fold(self, block: Counts, decay: float) -> None:
        """``self = decay * self + block``."""
        self.answered = [decay * a + b for a, b in zip(self.answered, block.answered, strict=True)]
        self.seen = [decay * n + b for n, b in zip(self.seen, block.seen, strict=True)]
        self.shares = [decay * x + b for x, b in zip(self.shares, block.shares, strict=True)]
        self.seconds = decay * self.seconds + block.seconds

    def excess_z(self, r: list[float]) -> float:
        """How many more of these requests were answered than in-control refusals ``r`` (per cell)
        expect, in standard errors (positive: fewer refusals, the change the watch looks for)."""
        expected = sum(n * (1 - p) for n, p in zip(self.seen, r, strict=True))
        var = sum(n * p * (1 - p) for n, p in zip(self.seen, r, strict=True))
        return (sum(self.answered) - expected) / math.sqrt(var) if var > 0 else 0.0

    def dump(self) -> dict[str, Any]:
        return {"answered": self.answered, "seen": self.seen, "shares": self.shares, "seconds": self.seconds}

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Counts:
        return cls(list(data["answered"]), list(data["seen"]), list(data["shares"]), float(data["seconds"]))
