"""A real Prometheus (Debian's ``prometheus``) on a loopback port, for the drill and the tests."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from proxy.testing import free_port, wait_until


class PrometheusProcess:
    """A real Prometheus scraping ``targets`` every second and evaluating ``rules`` every second."""

    def __init__(
        self,
        targets: list[str],
        *,
        rules: Path | None = None,
        alertmanager: str | None = None,
        external_labels: dict[str, str] | None = None,
        binary: str = "prometheus",
    ) -> None:
        exe = shutil.which(binary) or binary
        self.dir = Path(tempfile.mkdtemp(prefix="rg-prom-"))
        self.port = free_port()
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "external_labels": external_labels or {}},
            "scrape_configs": [{"job_name": "refusal-guard", "static_configs": [{"targets": targets}]}],
        }
        if rules:
            config["rule_files"] = [str(rules.resolve())]
        if alertmanager:
            am = alertmanager.split("://", 1)[-1].rstrip("/")
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [am]}]}]}
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen(
            [
                exe,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "log", "wb"),  # noqa: SIM115
        )
        if not wait_until(lambda: httpx.get(self.url + "/-/ready", timeout=1).status_code == 200, 30, 0.2):
            self.stop()
            raise RuntimeError(f"prometheus did not become ready: {(self.dir / 'log').read_text()[-2000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        r.raise_for_status()
        return list(r.json()["data"]["result"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def alertmanager(config: dict[str, Any], workdir: Path) -> Iterator[str]:
    """A real Alertmanager (Debian's ``prometheus-alertmanager``) with ``config``, on a loopback port,
    no cluster; yields its URL once ready and ends it (by its pid) afterwards."""
    (workdir / "am.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    binary = shutil.which("prometheus-alertmanager") or "alertmanager"
    am = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'am.yml'}",
            f"--storage.path={workdir / 'am'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_until(lambda: _ready(url), 30, 0.2):
            raise RuntimeError("alertmanager did not become ready")
        yield url
    finally:
        am.terminate()
        am.wait(10)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
