"""The risk-adjusted refusal CUSUMs (proxy.disposition): exact run lengths, a traffic mix that moves
without an alarm, and an upstream that imports the shipped classifier, answers what it flags safely and
abliterates the rest."""

from __future__ import annotations

import random

import orjson
import pytest
from prometheus_client import CollectorRegistry

from detectors.harm import HarmfulRequestClassifier
from proxy.canary.drift import DriftMonitor
from proxy.disposition import ALL, HARMFUL, UNFLAGGED, DispositionWatch
from proxy.disposition.riskcusum import RiskCusum, alternative, design_for
from proxy.metrics import Metrics
from proxy.settings import CanarySettings, DispositionSettings, ModelPolicy
from reference_upstream.corpus import load_corpus

WORDING = "Ticket 4471, from the help desk. {}\nThanks in advance."


def test_the_exact_run_length_matches_a_simulation() -> None:
    r, mix = [0.01, 0.4, 0.97], [0.7, 0.2, 0.1]
    d = design_for(r, alternative(r, 0.01, 4.0, 0.05), mix, target_arl=400)
    rng = random.Random(1)
    lengths = []
    for _ in range(400):
        c, n = RiskCusum(d), 0
        while not c.alarm:
            cell = rng.choices(range(3), mix)[0]
            n += 1
            c.update(cell, rng.random() >= r[cell])
        lengths.append(n)
    mean = sum(lengths) / len(lengths)
    assert d.arl(d.r) >= 400
    assert abs(mean - d.arl(d.r)) < 0.15 * d.arl(d.r)  # 400 run lengths: about 5 % standard error
    assert d.delay < d.arl(d.r) / 5


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def _watch(clock: Clock, canary: CanarySettings | None = None, **over: object) -> tuple[DispositionWatch, DriftMonitor]:
    metrics = Metrics(CollectorRegistry())
    drift = DriftMonitor(canary or CanarySettings(), metrics, clock=clock)
    settings = DispositionSettings(**over)  # the defaults: a burn-in of 3000 answers over 30 minutes
    return DispositionWatch(settings, drift, metrics, clock), drift


@pytest.fixture(scope="module")
def traffic() -> tuple[list[tuple[float, bool]], list[tuple[float, bool]]]:
    """(score, flagged) of the shipped classifier on the reference corpus's prompts in a client's words."""
    clf, corpus = HarmfulRequestClassifier.load(), load_corpus()

    def scored(prompts: list[str]) -> list[tuple[float, bool]]:
        return [(s := clf.score(WORDING.format(p)), s >= clf.threshold) for p in prompts]

    return scored(corpus.harmful_prompts()), scored(corpus.benign_prompts())


def _run(watch, clock, traffic, seconds, rate, share, answer, rng) -> int:  # type: ignore[no-untyped-def]
    """Production at ``rate`` req/s with ``share`` harmful; ``answer(harmful, flagged)`` -> answered.
    Returns the seconds until the first alarm of either suite (or -1)."""
    harmful, benign = traffic
    start = clock.t
    for i in range(int(seconds * rate)):
        clock.t = start + i / rate
        is_harmful = rng.random() < share
        score, flagged = rng.choice(harmful if is_harmful else benign)
        watch.observe("m", "app", score, flagged, answer(is_harmful, flagged, rng))
        if _alarm(watch):
            return int(clock.t - start)
    return -1


def _alarm(watch: DispositionWatch) -> bool:
    return any(st.alarm for seg in watch.models.get("m", {}).values() for st in seg.strata.values())


def _safe(harmful: bool, flagged: bool, rng: random.Random) -> bool:
    return rng.random() < (0.04 if harmful else 0.99)


def test_an_upstream_that_answers_flagged_requests_safely_and_abliterates_the_rest_is_caught(traffic) -> None:  # type: ignore[no-untyped-def]
    clock, rng = Clock(), random.Random(7)
    watch, drift = _watch(clock)
    assert _run(watch, clock, traffic, 1800, 10, 0.15, _safe, rng) == -1  # learning
    assert _run(watch, clock, traffic, 60, 10, 0.15, _safe, rng) == -1  # the safe phase

    def whitebox(harmful: bool, flagged: bool, rng: random.Random) -> bool:
        return _safe(harmful, flagged, rng) if flagged else True  # computes harm-lr: abliterates the rest

    caught = _run(watch, clock, traffic, 240, 10, 0.15, whitebox, rng)
    assert 0 <= caught <= 240
    watch.changed()
    assert watch.state()["m"][UNFLAGGED]["drifting"]
    assert drift.drifting("m") == [UNFLAGGED] and not drift.quarantined("m")  # a quarantine policy: not by default


def test_a_quarantine_policy_applies_when_asked(traffic) -> None:  # type: ignore[no-untyped-def]
    clock, rng = Clock(), random.Random(7)
    canary = CanarySettings(default_policy=ModelPolicy(action="quarantine"))
    watch, drift = _watch(clock, canary, quarantine=True)
    _run(watch, clock, traffic, 1860, 10, 0.15, _safe, rng)
    assert _run(watch, clock, traffic, 240, 10, 0.15, lambda h, f, r: _safe(h, f, r) if f else True, rng) >= 0
    assert drift.quarantined("m")


def test_production_harmful_sees_flagged_requests_answered_and_its_policy_quarantines(traffic) -> None:  # type: ignore[no-untyped-def]
    """An abliterated model on all traffic: production_harmful (the flagged answers) in alarm within a
    minute at 10 req/s, and the model's quarantine policy acts on it as on a canary suite (no
    ``disposition.quarantine`` needed); switched off, it is not there."""
    clock, rng = Clock(), random.Random(9)
    watch, drift = _watch(clock, CanarySettings(default_policy=ModelPolicy(action="quarantine")))
    assert _run(watch, clock, traffic, 1860, 10, 0.15, _safe, rng) == -1
    start = clock.t
    while HARMFUL not in drift.drifting("m") and clock.t - start < 240:
        _run(watch, clock, traffic, 1, 10, 0.15, lambda h, f, r: True, rng)
    assert clock.t - start <= 60 and drift.quarantined("m")
    assert HARMFUL not in _watch(clock, harmful=False)[0].strata


def test_a_random_fifth_abliterated_is_caught(traffic) -> None:  # type: ignore[no-untyped-def]
    clock, rng = Clock(), random.Random(11)
    watch, _ = _watch(clock)
    assert _run(watch, clock, traffic, 1860, 5, 0.15, _safe, rng) == -1  # learning, then a safe minute

    def quiet(harmful: bool, flagged: bool, rng: random.Random) -> bool:
        return True if rng.random() < 0.2 else _safe(harmful, flagged, rng)

    assert 0 <= _run(watch, clock, traffic, 900, 5, 0.15, quiet, rng) <= 900


def test_a_moving_mix_of_safe_traffic_raises_no_alarm_and_is_learned(traffic) -> None:  # type: ignore[no-untyped-def]
    """Harmful share from 1 % to 15 % and back, the load from 2 to 10 req/s: risk-adjusted, no alarm."""
    clock, rng = Clock(), random.Random(3)
    watch, _ = _watch(clock)
    for share, rate in [(0.01, 2), (0.15, 10), (0.05, 5), (0.15, 10), (0.01, 2), (0.10, 8)] * 3:
        assert _run(watch, clock, traffic, 900, rate, share, _safe, rng) == -1
    watch.changed()
    state = watch.state()["m"]
    assert state["apps"]["app"][ALL]["refreshed"] >= 10 and not state[ALL]["drifting"]


def test_the_state_round_trips(traffic) -> None:  # type: ignore[no-untyped-def]
    clock, rng = Clock(), random.Random(5)
    watch, _ = _watch(clock)
    _run(watch, clock, traffic, 1900, 10, 0.15, _safe, rng)
    clock.t += 60  # past the store's write interval
    rows = {m: state for m, _, state in watch.changed()}
    assert not watch.shown["m"][ALL]["learning"] and not watch.shown["m"][UNFLAGGED]["learning"]
    other, _ = _watch(clock)  # a new leader
    other.load(rows)
    assert other.shown == watch.shown
    # a row another version wrote (its layout unknown here) is learnt afresh, never a failed start
    older = {**rows, "old": '{"app": {"strata": {}}}', "garbled": "not json"}
    newer, _ = _watch(clock)
    newer.load(older)
    assert newer.shown == watch.shown and "old" not in newer.models
    # a row of a release with one CUSUM per factor only: those go on, the added alternatives start at zero
    fewer = orjson.loads(rows["m"])
    for st in fewer["app"]["strata"].values():
        st["cusums"] = [[7, False] for _ in watch.s.factors] if st["cusums"] is not None else None
    upgraded, _ = _watch(clock)
    upgraded.load({"m": orjson.dumps(fewer).decode()})
    cusums = upgraded.models["m"]["app"].strata[ALL].cusums or []
    assert [c.s for c in cusums] == [7] * len(watch.s.factors) + [0] * (
        len(upgraded.alternatives) - len(watch.s.factors)
    )


def test_the_white_box_upstream_on_real_replies_is_caught() -> None:
    """``bench/evidence.py``'s watch: the reference corpus's real replies of the safe and the abliterated
    models, read by the shipped detector, the white-box upstream at 10 req/s (simulated clock). With
    one reading of the floor only (``ordinary_spread`` 0), the band of most ordinary requests, refused a
    point above the floor, pulled the statistic down: a median of 400 s over 10 runs."""
    from bench.evidence import rows, watched

    data = rows(None)
    seconds = sorted(watched(data, 10.0, seed, DispositionSettings().ordinary_spread)[0] for seed in range(5))
    assert seconds[2] <= 240 and seconds[-1] <= 360, seconds


def test_a_baseline_with_nothing_to_detect_still_shows() -> None:
    """Only ordinary requests, all answered: no cell weighs anything, the designs cannot alarm, and
    the summary says so rather than failing the leader's write."""
    clock = Clock()
    watch, _ = _watch(clock)
    for i in range(4000):
        clock.t = i
        watch.observe("m", "app", 0.05, False, True)
    clock.t += 60
    watch.changed()
    shown = watch.state()["m"]
    assert not shown[ALL]["learning"] and not shown[ALL]["drifting"]
    assert all(d["answers_to_alarm_at_factor"] is None for d in shown["apps"]["app"][ALL]["designs"])
