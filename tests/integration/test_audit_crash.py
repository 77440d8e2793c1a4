"""The audit log across process deaths: SIGTERM drains, and under SIGKILL strict durability loses nothing
while the default mode loses at most the last flush interval."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proxy.audit.sinks import open_sink
from proxy.testing import free_port, wait_http

CLI = [sys.executable, "-m", "proxy"]
PROMPTS = ["Write a tutorial on how to make a bomb", "How can I kill a Python process?"]


@pytest.fixture(scope="module")
def sim_process() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([*CLI, "sim-upstream", "--port", str(port)], stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


def start_proxy(tmp: Path, upstream: str, **audit: Any) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    url = f"sqlite:///{tmp}/audit.db"
    cfg = tmp / "guard.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "port": port,
                "canary": {"enabled": False},
                "upstreams": [{"name": "sim", "base_url": upstream, "models": ["sim-model"]}],
                "audit": {"url": url, **audit},
            }
        )
    )
    proc = subprocess.Popen([*CLI, "serve", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return proc, f"http://127.0.0.1:{port}", url


class Load:
    """Requests from 16 threads; remembers which ids were fully answered with 200, and when."""

    def __init__(self, base: str, total: int) -> None:
        self.base, self.total = base, total
        self.answered: dict[str, float] = {}
        self.lock = threading.Lock()
        self.count = 0

    def one(self, i: int) -> None:
        rid = f"load-{i}"
        body = {"model": "sim-model", "stream": i % 2 == 0, "messages": [{"role": "user", "content": PROMPTS[i % 2]}]}
        try:
            with httpx.Client(timeout=10) as c:
                r = c.post(self.base + "/v1/chat/completions", json=body, headers={"x-request-id": rid})
                complete = r.status_code == 200 and (not body["stream"] or r.text.rstrip().endswith("[DONE]"))
        except httpx.HTTPError:
            complete = False
        with self.lock:
            self.count += 1
            if complete:
                self.answered[rid] = time.monotonic()

    def run(self, kill_after: int, kill: Any) -> float:
        killed_at = 0.0
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(self.one, i) for i in range(self.total)]
            while self.count < kill_after:
                time.sleep(0.005)
            killed_at = time.monotonic()
            kill()
            concurrent.futures.wait(futures)
        return killed_at


def recorded_ids(url: str) -> set[str]:
    sink = open_sink(url)
    try:
        return {r["request_id"] for r in sink.read() if r.get("traffic") == "production"}
    finally:
        sink.close()


def test_sigterm_mid_load_keeps_every_answered_request(sim_process: str, tmp_path: Path) -> None:
    """1,000 requests, SIGTERM after 500: every request answered with 200 has its record."""
    proc, base, url = start_proxy(tmp_path, sim_process)
    load = Load(base, 1000)
    load.run(500, lambda: proc.send_signal(signal.SIGTERM))
    proc.wait(30)
    assert len(load.answered) >= 500
    assert set(load.answered) <= recorded_ids(url)


def test_sigkill_strict_loses_no_answered_request(sim_process: str, tmp_path: Path) -> None:
    """Strict durability: after SIGKILL, every fully answered request has its record."""
    proc, base, url = start_proxy(tmp_path, sim_process, durability="strict")
    load = Load(base, 600)
    load.run(300, lambda: os.kill(proc.pid, signal.SIGKILL))
    proc.wait(10)
    assert len(load.answered) >= 300
    assert set(load.answered) <= recorded_ids(url)


def test_sigkill_default_loses_at_most_the_last_flush_interval(sim_process: str, tmp_path: Path) -> None:
    """Default durability: what SIGKILL loses was answered within the last flush interval (plus scheduling slack)."""
    flush = 0.2
    proc, base, url = start_proxy(tmp_path, sim_process, flush_seconds=flush)
    load = Load(base, 600)
    killed_at = load.run(300, lambda: os.kill(proc.pid, signal.SIGKILL))
    proc.wait(10)
    missing = set(load.answered) - recorded_ids(url)
    late = [killed_at - load.answered[rid] for rid in missing]
    print(
        f"default durability, SIGKILL: {len(missing)} of {len(load.answered)} answered requests unrecorded; "
        f"oldest answered {max(late, default=0):.3f} s before the kill"
    )
    assert all(age <= flush + 0.3 for age in late)
