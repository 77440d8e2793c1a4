"""Replicas as real processes: ``refusal-guard serve`` with a config per replica, started and stopped
by the test (SIGINT, then by pid), and what a test asks of each over HTTP."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import yaml
from prometheus_client.parser import text_string_to_metric_families

from proxy.testing import free_port, wait_http

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "fleet-admin-key"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
# the deployment's secret, the same on every replica as an operator sets it: the secret judge's head
JUDGE_SECRET = secrets.token_hex(16)


class Replica:
    def __init__(self, cfg: Path, port: int) -> None:
        self.cfg, self.port = cfg, port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        env = {
            **os.environ,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "REFUSAL_GUARD_JUDGE_SECRET": JUDGE_SECRET,
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(self.cfg)], cwd=ROOT, env=env
        )
        wait_http(self.url + "/healthz", timeout=30)

    def stop(self, sig: int = signal.SIGINT) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def state(self) -> dict[str, Any]:
        return dict(httpx.get(self.url + "/canary/state", timeout=5).json())

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=20)

    def chat(self, model: str = "sim-model") -> int:
        msgs = [{"role": "user", "content": "How do I kill a Python process?"}]
        r = httpx.post(self.url + "/v1/chat/completions", json={"model": model, "messages": msgs}, timeout=10)
        return r.status_code

    def admin(self, path: str) -> httpx.Response:
        return httpx.post(self.url + "/admin/" + path, headers=ADMIN, timeout=10)

    def metric(self, name: str, **labels: str) -> float:
        return metric_total(self.url, name, **labels)


def metric_total(url: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples at ``url``'s ``/metrics`` whose labels include ``labels``."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and set(labels.items()) <= set(s.labels.items())
    )


def config(port: int, **settings: Any) -> dict[str, Any]:
    """A replica's settings: its port, the fleet's admin key, quiet logs, then ``settings``."""
    base = {"port": port, "log_level": "warning", "admin_key_sha256": hashlib.sha256(ADMIN_KEY.encode()).hexdigest()}
    return {**base, **settings}


@contextlib.contextmanager
def fleet(tmp_path: Path, n: int, **settings: Any) -> Iterator[list[Replica]]:
    """``n`` replicas with the same ``settings`` (each on its own port), up for the block."""
    replicas = []
    for i in range(n):
        port = free_port()
        cfg = tmp_path / f"replica{i}.yaml"
        cfg.write_text(yaml.safe_dump(config(port, **settings)))
        replicas.append(Replica(cfg, port))
    try:
        for r in replicas:
            r.start()
        yield replicas
    finally:
        for r in replicas:
            r.stop()


@contextlib.contextmanager
def on_postgres(
    tmp_path: Path, n: int, upstream: str, models: list[str], *, state: dict[str, Any] | None = None, **settings: Any
) -> Iterator[list[Replica]]:
    """``n`` replicas in front of ``upstream`` (its root URL, serving ``models``), audit log and state
    store on one real PostgreSQL of their own, destroyed after the block."""
    from tests.pg import PostgresServer

    pg = PostgresServer()
    pg.start()
    try:
        with fleet(
            tmp_path,
            n,
            upstreams=[{"name": "u", "base_url": upstream + "/v1", "models": models}],
            audit={"url": pg.url},
            state={"url": pg.url, **(state or {})},
            **settings,
        ) as replicas:
            yield replicas
    finally:
        pg.destroy()


def leaders(replicas: list[Replica]) -> set[str | None]:
    """The leader each live replica names."""
    return {r.state()["leader"] for r in replicas if r.alive}


def one_leader(replicas: list[Replica]) -> bool:
    named = leaders(replicas)
    return len(named) == 1 and None not in named
