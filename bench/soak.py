"""Soak: a steady mixed load on one worker for a long time, all features on; is anything leaking?

    python bench/soak.py [--minutes 30] [--rate 300] [--stream-share 0.25]

The fake upstream and the load generator (an open-loop aiohttp client that sends at a fixed rate
whatever the answers do) share core 1; refusal-guard runs on core 0 with its defaults (trained
detector, SQLite audit, metrics) and canaries every 5 s. Every 30 s: RSS and open file
descriptors. At the end the proxy is stopped with SIGTERM (it drains its audit queue) and the
audit log is counted against the answers the clients got. Writes ``bench/results/soak.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import fake_upstream  # noqa: E402
from bench.detector import _cpu, _kib  # noqa: E402
from bench.report import save  # noqa: E402
from proxy.testing import free_port, wait_http  # noqa: E402

WARMUP_S = 120.0


class Load:
    """Open-loop load: one request every 1/rate seconds, streamed with probability ``stream_share``."""

    def __init__(self, url: str, rate: float, stream_share: float) -> None:
        self.url, self.rate, self.stream_share = url, rate, stream_share
        self.ok = self.errors = self.sent = 0
        self.latencies: list[float] = []
        self.error_kinds: dict[str, int] = {}

    async def one(self, session: aiohttp.ClientSession, stream: bool) -> None:
        body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "What is the capital?"}]}
        t0 = time.perf_counter()
        try:
            async with session.post(self.url, json=body) as r:
                data = await r.read()
                good = r.status == 200 and (not stream or data.endswith(b"data: [DONE]\n\n"))
                kind = None if good else f"status {r.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            kind = type(exc).__name__
        if kind is None:
            self.ok += 1
            self.latencies.append(time.perf_counter() - t0)
        else:
            self.errors += 1
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    async def run(self, seconds: float, on_tick: Any) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=256)
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            start = time.perf_counter()
            next_tick = start + 30
            every = 1.0 / self.rate
            n = 0
            while (now := time.perf_counter()) - start < seconds:
                due = start + n * every
                if due > now:
                    await asyncio.sleep(due - now)
                stream = (n % round(1 / self.stream_share)) == 0 if self.stream_share else False
                t = asyncio.create_task(self.one(session, stream))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                n += 1
                self.sent = n
                if time.perf_counter() >= next_tick:
                    on_tick(time.perf_counter() - start)
                    next_tick += 30
            await asyncio.gather(*tasks)


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--rate", type=float, default=300)
    p.add_argument("--stream-share", type=float, default=0.25)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rg-soak-"))
    up_port, port = free_port(), free_port()
    upstream = fake_upstream.launch(up_port)
    db = tmp / "audit.db"
    cfg = tmp / "guard.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "port": port,
                "log_level": "warning",
                "upstreams": [{"name": "fake", "base_url": f"http://127.0.0.1:{up_port}/v1", "models": ["m"]}],
                "audit": {"url": f"sqlite:///{db}"},
                "canary": {"interval_seconds": 5},
            }
        )
    )
    proxy = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "proxy", "serve", "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    samples: list[dict[str, float]] = []
    try:
        wait_http(f"http://127.0.0.1:{up_port}/v1/models")
        wait_http(f"http://127.0.0.1:{port}/healthz")
        load = Load(f"http://127.0.0.1:{port}/v1/chat/completions", args.rate, args.stream_share)

        def tick(elapsed: float) -> None:
            s = {"t_s": round(elapsed), "rss_mb": _kib(proxy.pid, "VmRSS") / 1024, "fds": fds(proxy.pid)}
            s.update(ok=load.ok, errors=load.errors)
            samples.append(s)
            print(json.dumps(s), file=sys.stderr, flush=True)

        os.sched_setaffinity(0, {1})
        asyncio.run(load.run(args.minutes * 60, tick))
        tick(args.minutes * 60)
        peak_rss = _kib(proxy.pid, "VmHWM") / 1024
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(120)
        upstream.terminate()
        upstream.wait(10)
    with sqlite3.connect(db) as c:
        audited = c.execute("SELECT count(*) FROM audit WHERE traffic = 'production'").fetchone()[0]
        canaries = c.execute("SELECT count(*) FROM audit WHERE traffic = 'canary'").fetchone()[0]
    after = [s for s in samples if s["t_s"] >= WARMUP_S] or samples
    lat = sorted(load.latencies)
    results = {
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": sys.version.split()[0]},
        "minutes": args.minutes,
        "rate": args.rate,
        "stream_share": args.stream_share,
        "sent": load.sent,
        "answered_ok": load.ok,
        "errors": load.errors,
        "error_kinds": load.error_kinds,
        "achieved_rps": load.ok / (args.minutes * 60),
        "p50_ms": statistics.median(lat) * 1e3 if lat else None,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1e3 if lat else None,
        "rss_after_warmup_mb": after[0]["rss_mb"],
        "rss_end_mb": after[-1]["rss_mb"],
        "rss_growth_pct": 100 * (after[-1]["rss_mb"] - after[0]["rss_mb"]) / after[0]["rss_mb"],
        "peak_rss_mb": peak_rss,
        "fds_min_max_after_warmup": [min(s["fds"] for s in after), max(s["fds"] for s in after)],
        "audited_production": audited,
        "audited_canary": canaries,
        "samples": samples,
    }
    md = (
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; {args.minutes:.0f} min at "
        f"{args.rate:.0f} requests/s ({100 * args.stream_share:.0f}% streamed), canaries every 5 s, SQLite audit.\n\n"
        "| sent | answered 200 | errors | p50 / p99 (ms) | RSS after warm-up -> end (MB) | growth | open fds "
        "after warm-up (min-max) | audit records (production) |\n|---|---|---|---|---|---|---|---|\n"
        f"| {load.sent:,} | {load.ok:,} | {load.errors} | {results['p50_ms']:.2f} / {results['p99_ms']:.2f} "
        f"| {results['rss_after_warmup_mb']:.1f} -> {results['rss_end_mb']:.1f} | {results['rss_growth_pct']:+.1f}% "
        f"| {results['fds_min_max_after_warmup'][0]}-{results['fds_min_max_after_warmup'][1]} | {audited:,} |\n"
    )
    save("soak", results, md)


if __name__ == "__main__":
    main()
