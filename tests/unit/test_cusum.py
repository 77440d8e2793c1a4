"""The default CUSUM's documented run lengths are what a simulation of it measures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from proxy.canary.cusum import BernoulliCusum, CusumDesign, canaries_for
from proxy.settings import DriftDesign

D = DriftDesign()
DESIGN = CusumDesign(D.p0, D.p1, D.h)
PAGE = (Path(__file__).resolve().parents[2] / "docs" / "canaries.md").read_text()  # where the figures are


def simulate(design: CusumDesign, p: float, runs: int, seed: int, cap: int = 10**7) -> np.ndarray:
    """Run lengths of ``runs`` independent CUSUMs at failure rate ``p``, vectorised over runs."""
    rng = np.random.default_rng(seed)
    s = np.zeros(runs, dtype=np.int64)
    length = np.zeros(runs, dtype=np.int64)
    alive = np.ones(runs, dtype=bool)
    step = 0
    while alive.any() and step < cap:
        step += 1
        fail = rng.random(runs) < p
        s = np.where(fail, s + design.up, np.maximum(0, s - design.down))
        hit = alive & (s >= design.h)
        length[hit] = step
        alive &= ~hit
        s[~alive] = 0
    return length


@pytest.mark.parametrize(("p", "runs"), [(D.p0, 3000), (0.3, 4000), (D.p1, 4000), (0.9, 4000)])
def test_simulated_average_run_length_matches_exact(p: float, runs: int) -> None:
    """Mean run length from simulation is within 6% of the exact Markov-chain figure (about 3 standard errors)."""
    lengths = simulate(DESIGN, p, runs, seed=1234)
    exact = DESIGN.arl(p)
    assert abs(lengths.mean() - exact) / exact < 0.06, (p, lengths.mean(), exact)


def test_detection_bound_holds_in_simulation() -> None:
    """At failure rate 0.9, 99% of alarms come within the documented number of canaries."""
    bound = canaries_for(DESIGN, 0.9, 0.99)
    lengths = simulate(DESIGN, 0.9, 20000, seed=99)
    assert (lengths <= bound).mean() >= 0.985
    assert DESIGN.alarm_probability(0.9, bound) >= 0.99 > DESIGN.alarm_probability(0.9, bound - 1)


def test_readme_states_the_computed_figures() -> None:
    """docs/canaries.md's figures for the default design are the computed ones."""
    assert f"{DESIGN.arl(D.p0):,.0f}" in PAGE
    assert f"{DESIGN.arl(0.9):.1f}" in PAGE
    assert f"within {canaries_for(DESIGN, 0.9, 0.99)} canaries" in PAGE


def test_running_statistic_alarms_and_recovers() -> None:
    """Six straight failures alarm; the alarm clears only once the statistic is back at zero."""
    c = BernoulliCusum(DESIGN)
    assert [c.update(True) for _ in range(6)] == [False] * 5 + [True]
    successes = 0
    while c.alarm:
        c.update(False)
        successes += 1
    assert successes == -(-DESIGN.h // DESIGN.down) and c.s == 0


def test_bad_designs_are_refused() -> None:
    with pytest.raises(ValueError):
        CusumDesign(0.5, 0.1, 10)
    with pytest.raises(ValueError):
        CusumDesign(0.1, 0.5, 0)
