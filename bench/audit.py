"""What strict audit durability adds to a request: sequential requests through a real proxy in front of a
real sim-upstream, with the audit log in default and in strict mode, in one run.

    python bench/audit.py [--requests 400] [--runs 3]

Writes bench/results/audit.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.detector import _cpu  # noqa: E402
from bench.report import save  # noqa: E402
from proxy.testing import free_port, wait_http  # noqa: E402

CLI = [sys.executable, "-m", "proxy"]


def measure(upstream: str, durability: str, n: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        cfg = Path(tmp) / "guard.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "port": port,
                    "canary": {"enabled": False},
                    "upstreams": [{"name": "sim", "base_url": upstream, "models": ["sim-model"]}],
                    "audit": {"url": f"sqlite:///{tmp}/audit.db", "durability": durability},
                }
            )
        )
        proc = subprocess.Popen(
            [*CLI, "serve", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz")
            times = []
            with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=30) as c:
                for i in range(n + 20):
                    t0 = time.perf_counter()
                    c.post(
                        "/chat/completions",
                        json={
                            "model": "sim-model",
                            "messages": [{"role": "user", "content": "How can I kill a Python process?"}],
                        },
                    ).raise_for_status()
                    if i >= 20:  # warm-up
                        times.append(time.perf_counter() - t0)
            return times
        finally:
            proc.terminate()
            proc.wait(10)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    sim_port = free_port()
    sim = subprocess.Popen([*CLI, "sim-upstream", "--port", str(sim_port)], stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{sim_port}/health")
        upstream = f"http://127.0.0.1:{sim_port}/v1"
        runs = []
        for _ in range(args.runs):
            d = measure(upstream, "default", args.requests)
            s = measure(upstream, "strict", args.requests)
            runs.append(
                {
                    "default_p50_ms": statistics.median(d) * 1e3,
                    "strict_p50_ms": statistics.median(s) * 1e3,
                    "default_p99_ms": statistics.quantiles(d, n=100)[98] * 1e3,
                    "strict_p99_ms": statistics.quantiles(s, n=100)[98] * 1e3,
                }
            )
    finally:
        sim.terminate()
        sim.wait(10)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    result = {"machine": _cpu(), "requests": args.requests, "runs": runs, "median": med}
    md = (
        f"Machine: {_cpu()}; {args.requests} sequential requests per mode, median of {args.runs} runs (SQLite sink).\n\n"
        "| durability | p50 (ms) | p99 (ms) |\n|---|---|---|\n"
        f"| default | {med['default_p50_ms']:.2f} | {med['default_p99_ms']:.2f} |\n"
        f"| strict | {med['strict_p50_ms']:.2f} | {med['strict_p99_ms']:.2f} |\n"
        f"\nstrict adds {med['strict_p50_ms'] - med['default_p50_ms']:.2f} ms at p50.\n"
    )
    save("audit", result, md)


if __name__ == "__main__":
    main()
