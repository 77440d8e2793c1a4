"""A served model swapped behind a name, at the default canary rate and a trickle of production: how
long and how many answers until the fingerprint flags it (:mod:`proxy.fingerprint`).

    python bench/swap.py [--runs 3] [--rate 0.2]

The reference upstream (safe answers) behind a proxy with the default canary settings (2 canaries
per suite and model per 60 s on average) and production requests from the openai SDK at ``--rate``
per second, not streamed (canaries copy that shape, so their answers carry usage too: a streamed
canary without `include_usage` counts nothing). Once the tokenizer tier's baseline is learnt, the upstream's
tokenizer is swapped (the same answers, so the same refusal rates: ``/sim/mode {"tokenizer":
"bytes"}``) and the time and the canary answers until ``refusal_guard_model_changed{tier="tokenizer"}``
are measured, with the baseline's own length. Writes ``bench/results/swap.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.detector import _cpu  # noqa: E402
from bench.report import save  # noqa: E402
from proxy.app import create_app  # noqa: E402
from proxy.settings import Settings  # noqa: E402
from proxy.testing import ServerThread, run_server, wait_until  # noqa: E402
from reference_upstream.app import create_sim_app  # noqa: E402
from reference_upstream.corpus import load_corpus  # noqa: E402


def answered(registry: CollectorRegistry) -> float:
    return sum(
        registry.get_sample_value(
            "refusal_guard_responses_total",
            {"model": "sim-model", "upstream": "sim", "traffic": t, "verdict": v},
        )
        or 0.0
        for t in ("production", "canary")
        for v in ("refusal", "partial_refusal", "compliance")
    )


def production(url: str, rate: float, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    prompts = load_corpus().benign_prompts()
    client = OpenAI(base_url=url + "/v1", api_key="unused")
    while not stop.wait(rng.expovariate(rate)):
        client.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": rng.choice(prompts)}])


def one(seed: int, rate: float) -> dict[str, Any]:
    with run_server(create_sim_app("safe")) as sim:
        settings = Settings.model_validate(
            {
                "upstreams": [{"name": "sim", "base_url": sim.url + "/v1", "models": ["sim-model"]}],
                "canary": {"seed": seed},  # the default rate
                "audit": {"enabled": False},
            }
        )
        registry = CollectorRegistry()
        app = create_app(settings, registry=registry)
        server = ServerThread(app).start()
        stop = threading.Event()
        client = threading.Thread(target=production, args=(server.url, rate, stop, seed), daemon=True)
        client.start()
        try:
            t0 = time.monotonic()

            def learnt() -> bool:  # the tokenizer tier's counts (the statistical tier's canary window is slower)
                state = app.state.fingerprint.state().get("sim-model")
                return bool(state and state["tokenizer"] and all(f["baseline"] for f in state["tokenizer"].values()))

            assert wait_until(learnt, 3600, 1.0)
            baseline_s, baseline_n = time.monotonic() - t0, answered(registry)
            httpx.post(sim.url + "/sim/mode", json={"tokenizer": "bytes"}).raise_for_status()
            t1, n1 = time.monotonic(), answered(registry)
            flagged = lambda: registry.get_sample_value(  # noqa: E731
                "refusal_guard_model_changed", {"model": "sim-model", "tier": "tokenizer"}
            )
            assert wait_until(lambda: flagged() == 1, 3600, 0.5)
            drifting = [s for s, v in app.state.drift.state()["models"]["sim-model"]["suites"].items() if v["drifting"]]
            return {
                "baseline_seconds": baseline_s,
                "baseline_answers": baseline_n,
                "seconds_to_flag": time.monotonic() - t1,
                "answers_to_flag": answered(registry) - n1,
                "suites_drifting": drifting,
            }
        finally:
            stop.set()
            client.join(30)
            server.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--rate", type=float, default=0.2, help="production requests per second")
    args = p.parse_args()
    runs = [one(seed, args.rate) for seed in range(1, args.runs + 1)]
    med = {
        k: statistics.median(r[k] for r in runs)
        for k in ("baseline_seconds", "baseline_answers", "seconds_to_flag", "answers_to_flag")
    }
    results = {"machine": {"cpu": _cpu(), "cores": os.cpu_count()}, "rate": args.rate, "runs": runs, "median": med}
    md = (
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; {len(runs)} run(s), default canary rate, "
        f"production at {args.rate} requests/s (not streamed).\n\n| | median |\n|---|---|\n"
        f"| baseline learnt after (s) | {med['baseline_seconds']:.0f} |\n| answers in the baseline (production and canary) | {med['baseline_answers']:.0f} |\n"
        f"| swap flagged after (s) | {med['seconds_to_flag']:.0f} |\n| answers after the swap | {med['answers_to_flag']:.0f} |\n\n"
        f"Canary suites in alarm at the flag: {[r['suites_drifting'] for r in runs]}.\n"
    )
    save("swap", results, md)


if __name__ == "__main__":
    main()
