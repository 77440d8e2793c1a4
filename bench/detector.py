"""Detector throughput on one core and proxy memory with each detector loaded.

    python bench/detector.py [--runs 5] [--seconds 2]

Throughput: classify 1-2 KB answers from the shipped labelled data in a loop pinned to one core;
the median of ``--runs`` runs. Memory: a real ``refusal-guard serve`` process in front of a real
``sim-upstream``, after 300 requests; peak RSS (VmHWM) read from /proc. Writes
``bench/results/detector.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import save  # noqa: E402
from detectors import load_detector  # noqa: E402
from detectors.dataset import load_examples  # noqa: E402
from detectors.harm import HarmfulRequestClassifier  # noqa: E402
from detectors.train_harm import load_requests  # noqa: E402
from proxy.testing import free_port, wait_http  # noqa: E402


def throughput(judge: Callable[[str], object], texts: list[str], runs: int, seconds: float) -> list[float]:
    """Texts per second through ``judge``, ``runs`` times for ``seconds`` each."""
    rates = []
    for _ in range(runs):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for t in texts:
                judge(t)
            n += len(texts)
        rates.append(n / (time.perf_counter() - start))
    return rates


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def proxy_memory(detector: str, prompts: list[str]) -> dict[str, float]:
    sim_port, port = free_port(), free_port()
    audit = Path(tempfile.mkdtemp(prefix="rg-bench-detector-")) / "audit.db"  # not the tree's var/
    cli = [sys.executable, "-m", "proxy"]
    sim = subprocess.Popen([*cli, "sim-upstream", "--port", str(sim_port)], stderr=subprocess.DEVNULL)
    proxy = subprocess.Popen(
        [
            *cli,
            "serve",
            "--upstream",
            f"http://127.0.0.1:{sim_port}/v1",
            "--port",
            str(port),
            "--detector",
            detector,
            "--audit",
            f"sqlite:///{audit}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{sim_port}/health")
        wait_http(f"http://127.0.0.1:{port}/healthz")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=30) as c:
            for i in range(300):
                c.post(
                    "/chat/completions",
                    json={
                        "model": "sim-model",
                        "stream": i % 2 == 0,
                        "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
                    },
                )
        time.sleep(1.0)  # let the side channel drain
        return {"peak_rss_mb": _kib(proxy.pid, "VmHWM") / 1024, "rss_mb": _kib(proxy.pid, "VmRSS") / 1024}
    finally:
        proxy.terminate()
        sim.terminate()
        proxy.wait(10)
        sim.wait(10)
        shutil.rmtree(audit.parent, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()
    examples = load_examples()
    texts = [e.response for e in examples if 1000 <= len(e.response.encode()) <= 2000]
    prompts = [e.prompt for e in examples if e.prompt][:300]
    os.sched_setaffinity(0, {0})  # one core for the throughput loop
    result: dict[str, object] = {
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version()},
        "texts": len(texts),
        "detectors": {},
    }
    for name in ("delex-lr", "pattern"):
        rates = throughput(load_detector(name).classify, texts, args.runs, args.seconds)
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        mem = proxy_memory(name, prompts)
        os.sched_setaffinity(0, {0})
        result["detectors"][name] = {"per_second_median": statistics.median(rates), "per_second_runs": rates, **mem}  # type: ignore[index]
    requests = [r.text for r in load_requests()]
    harm = throughput(HarmfulRequestClassifier.load().is_harmful, requests, args.runs, args.seconds)
    result["harmful_request_classifier"] = {
        "prompts": len(requests),
        "per_second_median": statistics.median(harm),
        "per_second_runs": harm,
    }
    lines = [
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, Python {result['machine']['python']}",  # type: ignore[index]
        f"Answers of 1-2 KB: {len(texts)}; median of {args.runs} runs of {args.seconds} s on one core.",
        "",
        "| detector | responses/s (one core) | proxy peak RSS (MB) |",
        "|---|---|---|",
    ]
    for name, r in result["detectors"].items():  # type: ignore[union-attr]
        lines.append(f"| {name} | {r['per_second_median']:,.0f} | {r['peak_rss_mb']:.0f} |")
    lines += [
        "",
        f"Harmful-request classifier (`harm-lr`, on the {len(requests):,} shipped requests, one core): "
        f"{statistics.median(harm):,.0f} prompts/s (median of {args.runs} runs).",
    ]
    save("detector", result, "\n".join(lines) + "\n")


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
