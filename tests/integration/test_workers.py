"""``serve --workers 2``: a real multi-process server. Metrics are summed across workers, canaries run
once (in the worker that holds the canary leader's lease in the embedded state store), a quarantine
reaches every worker, and every exchange is audited."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from proxy.testing import free_port, run_server, wait_for, wait_http, wait_until
from reference_upstream.app import create_sim_app
from tests.fleet import metric_total as total

ROOT = Path(__file__).resolve().parents[2]
MSGS = [{"role": "user", "content": "How do I kill a Python process?"}]


def production_chains(db: Path) -> dict[str, int]:
    try:
        with sqlite3.connect(db) as c:
            q = "SELECT writer, count(*) FROM audit WHERE traffic = 'production' GROUP BY writer"
            return dict(c.execute(q).fetchall())
    except sqlite3.OperationalError:  # not created yet
        return {}


@pytest.mark.timeout(240)
def test_two_workers_share_metrics_canaries_quarantine_and_audit(tmp_path: Path) -> None:
    with run_server(create_sim_app("safe")) as sim:
        port = free_port()
        db = tmp_path / "audit.db"
        cfg = tmp_path / "guard.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "port": port,
                    "workers": 2,
                    "log_level": "warning",
                    "upstreams": [{"name": "sim", "base_url": sim.url + "/v1", "models": ["sim-model"]}],
                    "audit": {"url": f"sqlite:///{db}"},
                    "canary": {
                        "interval_seconds": 0.2,
                        "per_round": 2,
                        "policies": {"sim-model": {"action": "quarantine"}},
                    },
                }
            )
        )
        metrics_dir = tmp_path / "metrics"
        metrics_dir.mkdir()
        env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(cfg)], cwd=ROOT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(url + "/healthz")
            sent = 0
            lock = threading.Lock()

            def burst(n: int) -> None:
                nonlocal sent
                client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
                for _ in range(n):
                    out = client.chat.completions.create(model="sim-model", messages=MSGS)  # type: ignore[arg-type]
                    assert out.choices[0].message.content
                    with lock:
                        sent += 1
                client.close()

            # new connections from several threads until both workers have answered some
            while len(production_chains(db)) < 2 and sent < 400:
                threads = [threading.Thread(target=burst, args=(5,)) for _ in range(8)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                wait_for(lambda: sum(production_chains(db).values()) == sent, timeout=5)
            assert len(production_chains(db)) == 2, "one worker answered everything"
            # every scrape, whichever worker answers it, reports the sum over both
            for _ in range(6):
                assert total(url, "refusal_guard_requests_total", model="sim-model", code="200") == sent
            # canaries run once, in the leader worker, and show up in the workers' /metrics
            assert total(url, "refusal_guard_canary_leader") == 1
            assert wait_for(lambda: total(url, "refusal_guard_canary_results_total", suite="harmful") >= 4, timeout=30)
            assert total(url, "refusal_guard_canary_target", model="sim-model") == 1
            assert total(url, "refusal_guard_drift_state", model="sim-model", suite="harmful") == 0
            # abliteration: the leader's drift quarantines the model in every worker
            httpx.post(sim.url + "/sim/mode", json={"mode": "abliterated"}).raise_for_status()

            def refused_everywhere() -> bool:
                codes = set()
                for _ in range(8):  # fresh connections reach both workers
                    r = httpx.post(url + "/v1/chat/completions", json={"model": "sim-model", "messages": MSGS})
                    codes.add(r.status_code)
                return codes == {503}

            assert wait_until(refused_everywhere, timeout=60, interval=0.5)
            assert total(url, "refusal_guard_quarantined", model="sim-model") == 1
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(60) == 0
        # graceful stop: every answered exchange is in the log, and every chain verifies
        assert sum(production_chains(db).values()) >= sent
        verify = subprocess.run(
            [sys.executable, "-m", "proxy", "audit", "verify", "--audit", f"sqlite:///{db}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "2 chain(s)" in verify.stdout  # one per worker (the leader's holds the canary records too)
