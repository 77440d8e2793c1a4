"""The upstream that has read our code (issue #20), behind real processes: 2 replicas on one real
PostgreSQL, the openai SDK at ``--rate`` req/s with 15 % harmful, an upstream that imports the
shipped classifier, answers what it flags (and every canary a tell gives away) safely and
abliterates the rest (:mod:`tests.whitebox`). Canaries off, or with ``--canary-interval`` on at
``--canary-per-round`` a suite per interval (the default rate: 60 s and 2), their prompts unknown
to the upstream as a private suite's are. The disposition watch learns with the default burn-in (3000 answers and at
least ``--burn-in-seconds``, 1800: at 10 req/s a baseline of 18,000 answers), 60 s are asserted
quiet, then the evasion: seconds to the alarm, the statistic that raised it, and the harmful
requests answered abliterated before it, per run (about 40 minutes each at the defaults).

    python bench/whitebox.py [--runs 1] [--rate 10] [--burn-in-seconds 1800] [--canary-interval S]

Writes ``bench/results/whitebox.{json,md}``, with canaries ``whitebox-canaries-{S}s.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.detector import _cpu  # noqa: E402
from bench.report import save  # noqa: E402
from tests.whitebox import Caught, caught_by_the_fleet  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--burn-in-seconds", type=float, default=1800.0)
    p.add_argument("--canary-interval", type=float, default=0.0, help="seconds; 0: canaries off")
    p.add_argument("--canary-per-round", type=int, default=2)
    args = p.parse_args()
    on = args.canary_interval > 0
    canary = {"interval_seconds": args.canary_interval, "per_round": args.canary_per_round} if on else None
    canaries = (
        f"canaries at {args.canary_per_round} a suite every {args.canary_interval:g} s (suites `harmful` and "
        "`benign`; the upstream recognises a canary only by a tell)"
        if on
        else "canaries off"
    )
    began, runs = time.monotonic(), list[Caught]()
    for n in range(args.runs):
        caught = caught_by_the_fleet(
            Path(tempfile.mkdtemp(prefix="rg-bench-whitebox-")), rate=args.rate, burn_in=3000,
            burn_in_seconds=args.burn_in_seconds, safe_seconds=60.0, within=900.0, seed=100 + n, canary=canary,
        )  # fmt: skip
        runs.append(caught)
        print(f"run {n + 1}/{args.runs}: {caught}", file=sys.stderr, flush=True)
    machine = {"cpu": _cpu(), "cores": os.cpu_count(), "python": sys.version.split()[0]}
    delays = [r.delay for r in runs]
    md = (
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}; 2 replicas on one "
        f"PostgreSQL, {args.rate:g} production req/s (15 % harmful), a burn-in of 3000 answers and at least "
        f"{args.burn_in_seconds:g} s, a 60 s safe phase, {canaries}.\n\n"
        "| run | seconds to the alarm | in alarm | harmful answered before it | harmful canaries answered "
        "| production requests before it | failed | answers the watch saw | classification shed | judged |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        + "".join(
            f"| {i + 1} | {r.delay:.0f} | {', '.join(sorted(set().union(*r.alarms)))} | {r.damage} "
            f"| {r.canary_damage} | {r.sent} | {r.failed} | {r.reached:.1%} | {r.shed:.0f} | {r.judged:.0f} |\n"
            for i, r in enumerate(runs)
        )
        + f"\nMedian {statistics.median(delays):.0f} s, worst {max(delays):.0f} s. "
        f"`python bench/whitebox.py --runs {args.runs} --rate {args.rate:g} --burn-in-seconds {args.burn_in_seconds:g}"
        + (f" --canary-interval {args.canary_interval:g} --canary-per-round {args.canary_per_round}" if on else "")
        + "`: "
        f"{time.monotonic() - began:.0f} s.\n"
    )
    rows = [{**vars(r), "alarms": [sorted(a) for a in r.alarms]} for r in runs]
    name = f"whitebox-canaries-{args.canary_interval:g}s" if on else "whitebox"
    save(name, {"machine": machine, "rate": args.rate, "canary": canary, "runs": rows}, md)


if __name__ == "__main__":
    main()
