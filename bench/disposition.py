"""The disposition watch (:mod:`proxy.disposition`) in simulated time, at its default settings: how
soon it catches an upstream that abliterates part of its traffic, what it lets through before, and
how often it raises a false alarm in a week of safe traffic whose mix moves.

    python bench/disposition.py [--seeds 10] [--days 7]

Traffic is the reference corpus's prompts (1287 harmful, 251 ordinary) in a client's words, scored by
the shipped harmful-request classifier exactly as the proxy scores them; each simulated model refuses
each prompt with its own probability (drawn once per prompt around the model's rates, as real models
refuse some prompts always and others never). Nothing here is an HTTP request: the watch sees the
(score, flagged, answered) triples the leader consumes, with a simulated clock.

- *delay*: a model learnt (``burn_in`` answers over ``burn_in_seconds``) and an hour of safe traffic,
  then an upstream that abliterates a random share of requests (5 to 100 %) at 5 req/s with 15 %
  harmful; and the white-box upstream (every request the public classifier flags answered safely,
  the rest abliterated) at 10 and at 5 req/s. Median and worst over ``--seeds`` runs of the seconds
  to the first alarm of any disposition statistic, and of the harmful requests answered before it.
- *week*: three models, seven days of safe traffic: the load follows the time of day (1 to 10 req/s),
  the harmful share moves from 1 to 15 % on its own daily cycle, and on day 3 a second app arrives
  with its own wording (a third of the traffic from then on). Alarms per model and statistic.

``--judge`` adds the secret judge's statistic (``production_judged``, every answer judged).
Writes ``bench/results/disposition.{json,md}`` (``disposition-judge`` with ``--judge``).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from prometheus_client import CollectorRegistry  # noqa: E402

from bench.report import save  # noqa: E402
from detectors.harm import HarmfulRequestClassifier  # noqa: E402
from proxy.canary.drift import DriftMonitor  # noqa: E402
from proxy.disposition import DispositionWatch  # noqa: E402
from proxy.metrics import Metrics  # noqa: E402
from proxy.settings import CanarySettings, DispositionSettings  # noqa: E402
from reference_upstream.corpus import load_corpus  # noqa: E402

WORDINGS = ("Ticket 4471, from the help desk. {}\nThanks in advance.", "[mobile app] user asks: {}")
MODELS = {"strict": (0.97, 0.03), "usual": (0.92, 0.012), "lenient": (0.80, 0.005)}  # refusal: harmful, ordinary
SHARES = (0.05, 0.10, 0.20, 0.50, 1.00)
Prompt = tuple[float, bool, bool, float, float]  # score, flagged, harmful, this model's refusal probability, judge's


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


Scored = tuple[float, bool, float]  # harm-lr's score and call, the secret judge's score (0 without it)


def scored(clf: HarmfulRequestClassifier, wording: str, judge: Any = None) -> tuple[list[Scored], list[Scored]]:
    corpus = load_corpus()

    def one(p: str) -> Scored:
        s = clf.score(wording.format(p))
        return s, s >= clf.threshold, judge.score(wording.format(p)) if judge is not None else 0.0

    return [one(p) for p in corpus.harmful_prompts()], [one(p) for p in corpus.benign_prompts()]


def model_prompts(
    scores: tuple[list[Any], list[Any]], rates: tuple[float, float], rng: random.Random
) -> list[list[Prompt]]:
    """Per class (harmful, ordinary): each prompt with this model's own refusal probability (a Beta
    around the model's rate, concentration 2: most prompts near 0 or 1)."""
    out = []
    for i, (items, mean) in enumerate(zip(scores, rates, strict=True)):
        a, b = 2 * mean, 2 * (1 - mean)
        out.append([(s, f, i == 0, rng.betavariate(a, b), j) for s, f, j in items])
    return out


ALARMED: list[tuple[str, float, list[str]]] = []  # (model, when, statistics in alarm) of each alarm raised
JUDGED = [False]  # --judge: every answer also feeds production_judged (the judge's sample is all of them here)


def watch(clock: Clock, settings: DispositionSettings | None = None) -> DispositionWatch:
    metrics = Metrics(CollectorRegistry())
    drift = DriftMonitor(CanarySettings(), metrics, clock=clock)
    return DispositionWatch(settings or DispositionSettings(), drift, metrics, clock, judged=JUDGED[0])


def alarm(w: DispositionWatch, model: str) -> bool:
    """Any production-side statistic of the model in alarm (production_harmful among them)."""
    return bool(w.drift.drifting(model))


Answer = Callable[[Prompt, random.Random], tuple[bool, bool]]  # -> (answered, abliterated and harmful)


def safe(p: Prompt, rng: random.Random) -> tuple[bool, bool]:
    return rng.random() >= p[3], False


def run(w: DispositionWatch, clock: Clock, prompts: list[list[Prompt]], seconds: float, rate: Callable[[float], float],
        share: Callable[[float], float], answer: Answer, rng: random.Random, model: str = "m", app: str = "a",
        stop_on_alarm: bool = True) -> tuple[float, int, int, int]:  # fmt: skip
    """Poisson arrivals from ``clock.t`` for ``seconds``; returns (seconds to the first alarm or -1,
    harmful requests answered abliterated until then, alarms raised, answers)."""
    start, damage, alarms, n, was = clock.t, 0, 0, 0, alarm(w, model)
    first = -1.0
    while clock.t < start + seconds:
        clock.t += rng.expovariate(rate(clock.t))
        n += 1
        p = rng.choice(prompts[0] if rng.random() < share(clock.t) else prompts[1])
        answered, harm = answer(p, rng)
        damage += harm
        w.observe(model, app, p[0], p[1], answered)
        if JUDGED[0]:
            w.judged(model, app, p[4], p[4] >= 0.5, answered)
        now = alarm(w, model)
        if now and not was:
            alarms += 1
            ALARMED.append((model, clock.t, w.drift.drifting(model)))
            if first < 0:
                first = clock.t - start
                if stop_on_alarm:
                    break
        was = now
    return first, damage, alarms, n


def learnt(prompts: list[list[Prompt]], rate: float, rng: random.Random) -> tuple[DispositionWatch, Clock]:
    clock = Clock()
    w = watch(clock)
    s = w.s
    first, *_ = run(
        w, clock, prompts, s.burn_in_seconds + s.burn_in / rate + 3600, lambda t: rate, lambda t: 0.15, safe, rng
    )
    assert first < 0, "a false alarm while learning"
    return w, clock


def delays(scores: Any, seeds: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    cases: list[tuple[str, float, Callable[[float], Answer]]] = [
        *((f"random {int(s * 100)} %", 5.0, lambda s=s: _random(s)) for s in SHARES),  # type: ignore[misc]
        ("white-box, 10 req/s", 10.0, lambda: _whitebox),
        ("white-box, 5 req/s", 5.0, lambda: _whitebox),
    ]
    for name, rate, make in cases:
        found, damage, by = [], [], []
        for seed in range(seeds):
            rng = random.Random(seed)
            prompts = model_prompts(scores, MODELS["usual"], rng)
            w, clock = learnt(prompts, rate, rng)
            first, d, *_ = run(w, clock, prompts, 6 * 3600, lambda t, r=rate: r, lambda t: 0.15, make(), rng)
            found.append(first if first >= 0 else math.inf)
            damage.append(d)
            by.append(w.drift.drifting("m"))  # the statistics in alarm at the first alarm
        rows[name] = {"rate": rate, "seconds": found, "damage": damage, "by": by}
        print(name, _fmt(found), damage, flush=True)
    return rows


def _random(share: float) -> Answer:
    def answer(p: Prompt, rng: random.Random) -> tuple[bool, bool]:
        if rng.random() < share:
            return True, p[2]
        return safe(p, rng)

    return answer


def _whitebox(p: Prompt, rng: random.Random) -> tuple[bool, bool]:
    return safe(p, rng) if p[1] else (True, p[2])


def week(days: float, seed: int, judge: Any = None) -> dict[str, Any]:
    clf = HarmfulRequestClassifier.load()
    apps = [scored(clf, w, judge) for w in WORDINGS]
    out = {}
    for name, rates in MODELS.items():
        rng = random.Random(seed)
        clock = Clock()
        w = watch(clock)
        per_app = [model_prompts(s, rates, random.Random(seed + i)) for i, s in enumerate(apps)]

        def load(t: float) -> float:  # req/s: 1 at night to 10 in the afternoon
            return 5.5 - 4.5 * math.cos(2 * math.pi * (t / 86400 - 0.1))

        def share(t: float) -> float:  # the harmful share: 1 % to 15 % on its own cycle (evenings worst)
            return 0.08 - 0.07 * math.cos(2 * math.pi * (t / 86400 - 0.35))

        alarms, served = 0, 0
        while clock.t < days * 86400:  # ten minutes at a time, from one app or the other
            second_app = clock.t >= 3 * 86400 and rng.random() < 1 / 3
            prompts = per_app[1] if second_app else per_app[0]
            app = "second" if second_app else "first"
            _, _, raised, n = run(w, clock, prompts, 600, load, share, safe, rng, name, app, False)
            alarms, served = alarms + raised, served + n
        clock.t += 3600  # past the store's write interval
        w.changed()
        summary = w.state()[name]["apps"]["first"]
        out[name] = {
            "alarms": alarms,
            "alarmed": [a for a in ALARMED if a[0] == name],
            "answers": served,
            "refreshed": {k: v["refreshed"] for k, v in summary.items()},
            "held": {k: v["held"] for k, v in summary.items()},
            "thresholds": {k: [d["h"] for d in v["designs"]] for k, v in summary.items()},
        }
        print(name, out[name], flush=True)
    return out


def _by_statistic(alarmed: list[tuple[str, float, list[str]]]) -> str:
    counts: dict[str, int] = {}
    for _, _, names in alarmed:
        for n in names:
            counts[n] = counts.get(n, 0) + 1
    return ", ".join(f"{n} {c}" for n, c in sorted(counts.items())) or "-"


def _fmt(xs: list[float]) -> str:
    finite = [x for x in xs if math.isfinite(x)]
    if len(finite) < len(xs):
        return f"{len(xs) - len(finite)} of {len(xs)} not caught in 6 h"
    return f"{statistics.median(xs):.0f} s (worst {max(xs):.0f} s)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--days", type=float, default=7.0)
    p.add_argument(
        "--judge", action="store_true", help="with the secret judge (the judge extra): production_judged too"
    )
    args = p.parse_args()
    began = time.monotonic()
    clf = HarmfulRequestClassifier.load()
    judge = None
    if args.judge:
        from detectors.judge import SecretJudge

        JUDGED[0], judge = True, SecretJudge.train(b"bench-disposition")
    rows = delays(scored(clf, WORDINGS[0], judge), args.seeds)
    weekly = week(args.days, seed=1, judge=judge)
    s = DispositionSettings()
    md = (
        f"Default settings (burn-in {s.burn_in} answers over {s.burn_in_seconds:.0f} s, factors {list(s.factors)}, "
        f"one false alarm per model per {s.false_alarm_days:.0f} days by design), simulated time, {args.seeds} seeds; "
        + ("with the secret judge (production_judged too); " if args.judge else "")
        + "model `usual` (refuses 92 % of harmful and 1.2 % of ordinary prompts); 15 % harmful traffic.\n\n"
        "| upstream | req/s | seconds to the alarm: median (worst) | harmful requests answered before it: median (worst) "
        "| in alarm first (runs) |\n|---|---|---|---|---|\n"
        + "".join(
            f"| {name} | {r['rate']:.0f} | {_fmt(r['seconds'])} | {statistics.median(r['damage']):.0f} ({max(r['damage'])}) "
            f"| {_by_statistic([('', 0.0, names) for names in r['by']])} |\n"
            for name, r in rows.items()
        )
        + f"\n{args.days:.0f} simulated days of safe traffic (1-10 req/s by time of day, harmful share 1-15 %, a second app"
        " from day 3), every production-side statistic:\n\n"
        "| model | answers | false alarms | by statistic | refreshes (held) |\n|---|---|---|---|---|\n"
        + "".join(
            f"| {m} | {r['answers']} | {r['alarms']} | {_by_statistic(r['alarmed'])} | "
            + ", ".join(f"{k} {r['refreshed'][k]} ({r['held'][k]})" for k in r["refreshed"])
            + " |\n"
            for m, r in weekly.items()
        )
        + f"\n`python bench/disposition.py --seeds {args.seeds} --days {args.days:g}{' --judge' if args.judge else ''}`: "
        f"{time.monotonic() - began:.0f} s.\n"
    )
    name = "disposition-judge" if args.judge else "disposition"
    save(name, {"delays": rows, "week": weekly, "seeds": args.seeds, "days": args.days, "judge": args.judge}, md)


if __name__ == "__main__":
    main()
