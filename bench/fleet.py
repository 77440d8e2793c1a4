"""``production_harmful`` across a fleet: the detection delay with production spread round-robin over
3 replicas on one PostgreSQL, beside one process, at the same total rate.

    python bench/fleet.py [--runs 5] [--rate 15] [--safe 10]

The upstream (``tests.fingerprint``) answers as a safe model, then, at the switch, as an abliterated
one to every production request while it answers canaries safely: it is told which requests are
canaries (an oracle no real upstream has), so only the probe-free signal can see the change. Both
layouts learn the same short baseline in the safe phase (100 answers a statistic over 30 s), so the
delay is the path's: one process records each flagged answer as it is classified; a fleet publishes
it (within 1 s), and the leader consumes it (within 1 s more). Layouts alternate within each run. Writes
``bench/results/fleet.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.detector import _cpu  # noqa: E402
from bench.report import save  # noqa: E402
from proxy.testing import run_server, wait_until  # noqa: E402
from tests.fingerprint import FingerprintingUpstream  # noqa: E402
from tests.fleet import Replica, fleet, one_leader  # noqa: E402
from tests.pg import PostgresServer  # noqa: E402
from tests.traffic import CLIENT_WORDING, Traffic  # noqa: E402

LAYOUTS = ("one process", "3 replicas")


class Oracle(FingerprintingUpstream):
    """Recognises every canary: anything the production clients did not word."""

    def is_probe(self, request: Request, body: dict[str, Any]) -> bool:
        messages = body.get("messages") or [{}]
        return not str(messages[-1].get("content", "")).startswith(CLIENT_WORDING[:11])


def drifting(replicas: list[Replica]) -> bool:
    return any(
        r.state()["disposition"].get("served-model", {}).get("production_harmful", {}).get("drifting") for r in replicas
    )


def one_run(layout: str, rate: float, safe: float, seed: int) -> dict[str, float]:
    up = Oracle("headers")
    tmp = Path(tempfile.mkdtemp(prefix="rg-bench-fleet-"))
    pg = PostgresServer() if layout == "3 replicas" else None
    try:
        if pg is not None:
            pg.start()
        store = (
            {"audit": {"url": pg.url}, "state": {"url": pg.url}} if pg else {"audit": {"url": f"sqlite:///{tmp}/a.db"}}
        )
        with (
            run_server(up.app) as server,
            fleet(
                tmp,
                3 if pg else 1,
                upstreams=[{"name": "u", "base_url": server.url + "/v1", "models": ["served-model"]}],
                canary={"interval_seconds": 2.0, "per_round": 1},
                disposition={"burn_in": 100, "burn_in_seconds": 30},
                **store,
            ) as replicas,
        ):
            assert wait_until(lambda: one_leader(replicas), timeout=30)
            with Traffic([r.client() for r in replicas], seed=seed, rate=rate) as traffic:
                time.sleep(safe)
                false_alarm = drifting(replicas)
                up.mode = "evade"
                switched = time.monotonic()
                caught = wait_until(lambda: drifting(replicas), timeout=300, interval=0.2)
                delay = time.monotonic() - switched
            return {
                "delay_s": delay if caught else float("nan"),
                "false_alarm": float(false_alarm),
                "sent": float(traffic.sent),
                "failed": float(traffic.failed),
            }
    finally:
        if pg is not None:
            pg.destroy()


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; {results['runs']} runs, layouts alternated, "
        f"{results['rate']:g} production req/s (15 % harmful) in total, a baseline of 100 answers a statistic, "
        "an upstream that recognises every canary.",
        "",
        "| layout | production_harmful delay, median (s) | per run (s) | false alarms in the safe phase |",
        "|---|---|---|---|",
    ]
    for layout in LAYOUTS:
        runs = results["layouts"][layout]
        delays = [r["delay_s"] for r in runs]
        lines.append(
            f"| {layout} | {statistics.median(delays):.1f} | {', '.join(f'{d:.1f}' for d in delays)} "
            f"| {sum(r['false_alarm'] for r in runs):.0f} |"
        )
    lines += ["", f"- 3 replicas / one process, median of within-run ratios: {results['ratio']:.2f}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--rate", type=float, default=15.0)
    p.add_argument("--safe", type=float, default=60.0)  # the baseline learnt, then a safe stretch
    args = p.parse_args()
    layouts: dict[str, list[dict[str, float]]] = {name: [] for name in LAYOUTS}
    ratios = []
    for n in range(args.runs):
        order = LAYOUTS if n % 2 == 0 else LAYOUTS[::-1]
        run = {layout: one_run(layout, args.rate, args.safe, seed=n) for layout in order}
        for layout, figures in run.items():
            layouts[layout].append(figures)
        ratios.append(run["3 replicas"]["delay_s"] / run["one process"]["delay_s"])
        print(
            f"run {n + 1}/{args.runs}: " + ", ".join(f"{k} {v['delay_s']:.1f} s" for k, v in run.items()),
            file=sys.stderr,
        )
    results = {
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": sys.version.split()[0]},
        "runs": args.runs,
        "rate": args.rate,
        "layouts": layouts,
        "ratio": statistics.median(ratios),
    }
    save("fleet", results, markdown(results))


if __name__ == "__main__":
    main()
