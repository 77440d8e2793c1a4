"""The proxy's cost in front of a real inference server: llama.cpp's own server with Gemma 3 270M.

    python bench/llamacpp.py [--requests 30] [--max-tokens 16]

Starts llama.cpp's server (``tests/llamacpp.py``: 2 threads, the same 2 cores as everything else)
and the proxy in front of it (one worker, defaults: trained detector, canaries off, audit on
SQLite), then sends the same greedy requests alternately direct and through the proxy, one at a
time: non-streamed latency, and a stream's time to first token and to its end. Reports medians and
the proxy's added share of the server's own time. Ratios within one run, as every benchmark here.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.report import save  # noqa: E402
from proxy.testing import free_port, wait_http  # noqa: E402
from tests.llamacpp import start  # noqa: E402

PROMPT = [{"role": "user", "content": "Write one sentence about the sea."}]


def timed(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, float]:
    """(seconds to the first byte of the body, seconds to the end)."""
    t0 = time.perf_counter()
    first = None
    with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        for _ in r.iter_raw():
            first = first or time.perf_counter()
    end = time.perf_counter()
    return (first or end) - t0, end - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=30, help="per path and mode")
    p.add_argument("--max-tokens", type=int, default=16)
    args = p.parse_args()
    with start() as llama, tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "guard.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "upstreams": [{"name": "llamacpp", "base_url": llama + "/v1", "models": ["*"]}],
                    "canary": {"enabled": False},
                    "audit": {"enabled": True, "url": f"sqlite:///{tmp}/audit.db"},
                    "log_level": "warning",
                }
            )
        )
        port = free_port()
        cmd = [sys.executable, "-m", "proxy.cli", "serve", "--config", str(cfg), "--port", str(port)]
        proxy = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            via = f"http://127.0.0.1:{port}"
            wait_http(via + "/readyz", timeout=60)
            results = measure(llama, via, args.requests, args.max_tokens)
        finally:
            proxy.terminate()
            proxy.wait(30)
    rows = []
    for mode in ("non-stream", "stream first byte", "stream end"):
        d, v = results[mode]["direct"], results[mode]["proxy"]
        rows.append(f"| {mode} | {d * 1000:.1f} | {v * 1000:.1f} | {(v - d) * 1000:+.1f} | {(v / d - 1):+.1%} |")
    md = "\n".join(
        [
            f"llama.cpp (Gemma 3 270M Q4_K_M, 2 threads) on {platform.processor() or platform.machine()}, "
            f"{args.requests} requests per cell, max_tokens {args.max_tokens}, medians (ms):",
            "",
            "| | direct | via refusal-guard | added | share |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    save("llamacpp", {"args": vars(args), "medians_seconds": results}, md)


def measure(llama: str, via: str, n: int, max_tokens: int) -> dict[str, dict[str, float]]:
    body = {"model": "gemma", "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    samples: dict[str, dict[str, list[float]]] = {
        m: {"direct": [], "proxy": []} for m in ("non-stream", "stream first byte", "stream end")
    }
    with httpx.Client(timeout=120) as client:
        for base in (llama, via):  # warm both paths (the prompt cache, the proxy's pool)
            timed(client, base + "/v1/chat/completions", body)
        for _ in range(n):
            for name, base in (("direct", llama), ("proxy", via)):
                url = base + "/v1/chat/completions"
                samples["non-stream"][name].append(timed(client, url, body)[1])
                first, end = timed(client, url, {**body, "stream": True})
                samples["stream first byte"][name].append(first)
                samples["stream end"][name].append(end)
    return {m: {k: statistics.median(v) for k, v in d.items()} for m, d in samples.items()}


if __name__ == "__main__":
    main()
