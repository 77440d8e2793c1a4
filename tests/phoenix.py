"""Arize Phoenix, a real OpenTelemetry trace backend, run locally for the tracing tests.

Phoenix (``arize-phoenix`` from PyPI, pinned) lives in a virtualenv of its own under ``~/.cache``,
made on first use, so its many dependencies never meet the project's. It receives OTLP over HTTP at
``/v1/traces`` and answers span queries on its REST API; it is started on free loopback ports with
a throwaway working directory and ended by its pid.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from proxy.testing import free_port, wait_http

VERSION = "20.26.1"
VENV = Path.home() / ".cache" / "refusal-guard" / f"phoenix-{VERSION}"


def install() -> Path:
    """Phoenix's virtualenv, made once (a few minutes, from PyPI)."""
    phoenix = VENV / "bin" / "phoenix"
    if not phoenix.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, f"arize-phoenix=={VERSION}"], check=True, timeout=1200)
    return phoenix


@dataclass
class Phoenix:
    url: str
    grpc: str  # OTLP over gRPC

    @property
    def otlp(self) -> str:
        return self.url  # OTLP/HTTP at /v1/traces

    def spans(self, trace_id: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/v1/projects/default/spans", params={"trace_id": trace_id, "limit": 100}, timeout=10)
        r.raise_for_status()
        return list(r.json()["data"])

    def wait_spans(self, trace_id: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The trace's spans once at least ``count`` arrived (export is batched, then ingested)."""
        deadline = time.monotonic() + timeout
        spans: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            spans = self.spans(trace_id)
            if len(spans) >= count:
                return spans
            time.sleep(0.3)
        raise AssertionError(f"trace {trace_id}: {len(spans)} spans in Phoenix after {timeout} s, wanted {count}")

    def latest(self, limit: int = 50) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/v1/projects/default/spans", params={"limit": limit}, timeout=10)
        r.raise_for_status()
        return list(r.json()["data"])


@contextmanager
def phoenix() -> Iterator[Phoenix]:
    binary = install()
    port, grpc = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="rg-phoenix-") as work:
        env = {
            **os.environ,
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(port),
            "PHOENIX_GRPC_PORT": str(grpc),
            "PHOENIX_WORKING_DIR": work,
            "PHOENIX_TELEMETRY_ENABLED": "false",
        }
        log = open(Path(work) / "phoenix.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([str(binary), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=180)
            yield Phoenix(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{grpc}")
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            log.close()
