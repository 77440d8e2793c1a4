"""The state store down for 30 s under a fleet's traffic (3 replicas, state and audit on one real
PostgreSQL, which the test stops and starts): no request fails, the quarantine in force stays in
force on every replica, an operator's quarantine sent during the outage is kept and reaches the
others when the store returns, and nothing is lost: every flagged production request's outcome
reaches the leader's one statistic, every exchange the audit log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pytest

from proxy.testing import audit_records, run_server, wait_until
from reference_upstream.app import create_sim_app
from tests.fleet import fleet, one_leader
from tests.pg import PostgresServer
from tests.traffic import Traffic

OUTAGE = 30.0
MODELS = ("served-model", "held-model", "later-model")


def stored_outcomes(url: str) -> int:
    """Flagged production requests of served-model the leader has consumed: production_harmful's
    counts as stored (a burn-in that never ends counts every one)."""
    with psycopg.connect(url) as c:
        row = c.execute("SELECT state FROM rg_disposition WHERE model = 'served-model'").fetchone()
    apps = json.loads(row[0]) if row else {}
    return round(sum(sum(app["strata"]["production_harmful"]["block"]["seen"]) for app in apps.values()))


@pytest.mark.timeout(300)
def test_thirty_seconds_without_the_store_lose_nothing(tmp_path: Path) -> None:
    pg = PostgresServer()
    pg.start()
    try:
        with (
            run_server(create_sim_app("safe", models=MODELS)) as sim,
            fleet(
                tmp_path,
                3,
                upstreams=[{"name": "sim", "base_url": sim.url + "/v1", "models": list(MODELS)}],
                audit={"url": pg.url, "retry_seconds": 1.0},
                state={"url": pg.url, "timeout_seconds": 2.0},
                canary={"interval_seconds": 1.0, "per_round": 1},
                disposition={"burn_in": 10**9},
            ) as replicas,
        ):
            r1, r2, _ = replicas
            assert wait_until(lambda: one_leader(replicas), timeout=20)
            assert r1.admin("quarantine/held-model").json()["stored"] is True
            assert wait_until(lambda: {r.chat("held-model") for r in replicas} == {503}, timeout=3, interval=0.1)

            with Traffic([r.client() for r in replicas], seed=6, rate=6.0) as traffic:
                time.sleep(5)
                pg.stop()
                down = time.monotonic()
                time.sleep(3)  # every replica has noticed
                assert not any(r.state()["store"]["reachable"] for r in replicas)
                answer = r2.admin("quarantine/later-model")
                assert answer.status_code == 200 and answer.json()["stored"] is False
                while time.monotonic() - down < OUTAGE:
                    assert {r.chat("held-model") for r in replicas} == {503}  # in force stays in force
                    assert r2.chat("later-model") == 503  # the local decision holds where it was made
                    time.sleep(2)
                pg.start()
                # the decision made during the outage reaches the others once the store is back
                assert wait_until(lambda: {r.chat("later-model") for r in replicas} == {503}, timeout=15)
                assert wait_until(lambda: all(r.state()["store"]["reachable"] for r in replicas), timeout=15)
                time.sleep(3)
            assert traffic.failed == 0 and traffic.answered == traffic.sent

            flagged = sum(r.metric("refusal_guard_harmful_requests_total", model="served-model") for r in replicas)
            assert flagged > 0
            assert wait_until(lambda: stored_outcomes(pg.url) == flagged, timeout=15), (
                stored_outcomes(pg.url),
                flagged,
            )
            assert wait_until(
                lambda: sum(r["model"] == "served-model" for r in audit_records(pg.url)) == traffic.answered,
                timeout=20,
            )
            assert sum(r.metric("refusal_guard_state_store_errors_total") for r in replicas) > 0
            assert one_leader(replicas)
    finally:
        pg.destroy()
