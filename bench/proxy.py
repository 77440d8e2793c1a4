"""Proxy overhead, throughput, streaming and memory: direct calls, refusal-guard and LiteLLM's proxy,
against one fast fake upstream, in one run.

    python bench/proxy.py [--runs 3] [--seconds 5] [--litellm-venv PATH]

Load comes from Debian's ``wrk`` pinned to core 1 (with the fake upstream); the proxy under test is
pinned to core 0. refusal-guard runs with its defaults (trained detector, metrics, SQLite audit,
canaries). LiteLLM's proxy runs from its own virtualenv (``--litellm-venv``, with ``litellm[proxy]``
installed at a pinned version), one worker. Figures are medians of ``--runs`` runs; ratios are
computed within the run. Writes ``bench/results/proxy.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
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
from bench.detector import _cpu, _kib  # noqa: E402
from proxy.drill import free_port, wait_http  # noqa: E402

OUT = ROOT / "bench" / "results"
POST_LUA = 'wrk.method = "POST"\nwrk.body = \'{"model":"m","messages":[{"role":"user","content":"What is the capital of France?"}]}\'\nwrk.headers["Content-Type"] = "application/json"\n'


def wrk(url: str, connections: int, seconds: float, script: Path) -> dict[str, float]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{int(seconds)}s",
            "-s",
            str(script),
            "--latency",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": latency("50%"),
        "p99_ms": latency("99%"),
        "non2xx": float(errors.group(1)) if errors else 0.0,
    }


async def stream_timing(url: str, n: int) -> dict[str, float]:
    """Time to first chunk and the gaps between chunks, over ``n`` streamed requests."""
    first, gaps = [], []
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(timeout=30) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            last = None
            async with c.stream("POST", url, json=body) as r:
                async for _chunk in r.aiter_raw():
                    now = time.perf_counter()
                    if last is None:
                        first.append(now - t0)
                    else:
                        gaps.append(now - last)
                    last = now
    return {
        "ttfb_ms": statistics.median(first) * 1e3,
        "gap_p50_ms": statistics.median(gaps) * 1e3,
        "gap_max_ms": max(gaps) * 1e3,
    }


class Direct:
    """The upstream itself, measured the same way."""

    def __init__(self, url: str) -> None:
        self.name, self.url, self.proc, self.startup = "direct", url, None, None

    def peak_rss_mb(self) -> None:
        return None


class Target:
    def __init__(self, name: str, cmd: list[str], url: str, ready: str, env: dict[str, str] | None = None) -> None:
        self.name, self.url = name, url
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        try:
            wait_http(ready)
        except RuntimeError:
            self.stop()
            raise
        self.startup = time.monotonic() - t0  # seconds from spawn to ready

    def peak_rss_mb(self) -> float:
        return _kib(self.proc.pid, "VmHWM") / 1024

    def stop(self) -> None:
        self.proc.terminate()  # also on a failed start, below
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def measure(t: Target | Direct, args: argparse.Namespace, script: Path) -> dict[str, object]:
    runs = []
    for _ in range(args.runs):
        runs.append({f"c{c}": wrk(t.url + "/v1/chat/completions", c, args.seconds, script) for c in (1, 8, 32)})
    med = {c: {k: statistics.median(r[c][k] for r in runs) for k in runs[0][c]} for c in runs[0]}
    return {
        "runs": runs,
        "median": med,
        "stream": asyncio.run(stream_timing(t.url + "/v1/chat/completions", 50)),
        "peak_rss_mb": t.peak_rss_mb(),
        "startup_s": t.startup,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--litellm-venv", type=Path, default=None)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rg-bench-"))
    script = tmp / "post.lua"
    script.write_text(POST_LUA)
    up_port = free_port()
    upstream = subprocess.Popen(
        [
            "taskset",
            "-c",
            "1",
            sys.executable,
            "-m",
            "uvicorn",
            "bench.fake_upstream:app",
            "--port",
            str(up_port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results: dict[str, object] = {"machine": {"cpu": _cpu(), "cores": os.cpu_count()}}
    try:
        wait_http(f"http://127.0.0.1:{up_port}/v1/models")
        direct = f"http://127.0.0.1:{up_port}"
        results["direct"] = measure(Direct(direct), args, script)
        port = free_port()
        cfg = tmp / "guard.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "port": port,
                    "upstreams": [{"name": "fake", "base_url": direct + "/v1", "models": ["m"]}],
                    "audit": {"url": f"sqlite:///{tmp}/audit.db"},
                }
            )
        )
        rg = Target(
            "refusal-guard",
            [sys.executable, "-m", "proxy", "serve", "--config", str(cfg)],
            f"http://127.0.0.1:{port}",
            f"http://127.0.0.1:{port}/healthz",
        )
        try:
            results["refusal-guard"] = measure(rg, args, script)
        finally:
            rg.stop()
        if args.litellm_venv:
            lport = free_port()
            lcfg = tmp / "litellm.yaml"
            lcfg.write_text(
                yaml.safe_dump(
                    {
                        "model_list": [
                            {
                                "model_name": "m",
                                "litellm_params": {"model": "openai/m", "api_base": direct + "/v1", "api_key": "x"},
                            }
                        ]
                    }
                )
            )
            try:
                ll = Target(
                    "litellm",
                    [
                        str(args.litellm_venv / "bin" / "litellm"),
                        "--config",
                        str(lcfg),
                        "--port",
                        str(lport),
                        "--num_workers",
                        "1",
                    ],
                    f"http://127.0.0.1:{lport}",
                    f"http://127.0.0.1:{lport}/health/liveliness",
                    env={"LITELLM_LOCAL_MODEL_COST_MAP": "True"},
                )
            except RuntimeError as exc:  # record it and keep the rest of the run
                results["litellm"] = {"error": str(exc)}
            else:
                try:
                    results["litellm"] = measure(ll, args, script)
                finally:
                    ll.stop()
    finally:
        upstream.terminate()
        upstream.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "proxy.json").write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: v.get("median") if isinstance(v, dict) else v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
