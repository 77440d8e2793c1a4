"""The upstream that has read our code (issue #20), behind real processes: 2 replicas on one real
PostgreSQL, the openai SDK at ``--rate`` req/s with 15 % harmful, canaries off, an upstream that
imports the shipped classifier, answers what it flags safely and abliterates the rest
(:mod:`tests.whitebox`). The disposition watch learns with the default burn-in (3000 answers and at
least ``--burn-in-seconds``, 1800: at 10 req/s a baseline of 18,000 answers), 60 s are asserted
quiet, then the evasion: seconds to the alarm, the statistic that raised it, and the harmful
requests answered abliterated before it, per run (about 40 minutes each at the defaults).

    python bench/whitebox.py [--runs 1] [--rate 10] [--burn-in-seconds 1800]

Writes ``bench/results/whitebox.{json,md}``.
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
    args = p.parse_args()
    began, runs = time.monotonic(), list[Caught]()
    for n in range(args.runs):
        caught = caught_by_the_fleet(
            Path(tempfile.mkdtemp(prefix="rg-bench-whitebox-")), rate=args.rate, burn_in=3000,
            burn_in_seconds=args.burn_in_seconds, safe_seconds=60.0, within=900.0, seed=100 + n,
        )  # fmt: skip
        runs.append(caught)
        print(f"run {n + 1}/{args.runs}: {caught}", file=sys.stderr, flush=True)
    machine = {"cpu": _cpu(), "cores": os.cpu_count(), "python": sys.version.split()[0]}
    delays = [r.delay for r in runs]
    md = (
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}; 2 replicas on one "
        f"PostgreSQL, {args.rate:g} production req/s (15 % harmful), a burn-in of 3000 answers and at least "
        f"{args.burn_in_seconds:g} s, a 60 s safe phase, canaries off.\n\n"
        "| run | seconds to the alarm | in alarm | harmful answered before it | production requests before it "
        "| failed | answers the watch saw | classification shed | judged |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        + "".join(
            f"| {i + 1} | {r.delay:.0f} | {', '.join(sorted(set().union(*r.alarms)))} | {r.damage} | {r.sent} "
            f"| {r.failed} | {r.reached:.1%} | {r.shed:.0f} | {r.judged:.0f} |\n"
            for i, r in enumerate(runs)
        )
        + f"\nMedian {statistics.median(delays):.0f} s, worst {max(delays):.0f} s. "
        f"`python bench/whitebox.py --runs {args.runs} --rate {args.rate:g} --burn-in-seconds {args.burn_in_seconds:g}`: "
        f"{time.monotonic() - began:.0f} s.\n"
    )
    rows = [{**vars(r), "alarms": [sorted(a) for a in r.alarms]} for r in runs]
    save("whitebox", {"machine": machine, "rate": args.rate, "runs": rows}, md)


if __name__ == "__main__":
    main()
