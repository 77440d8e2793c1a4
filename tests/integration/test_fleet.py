"""One watch for the fleet: 3 replicas as real processes (``refusal-guard serve``) on one real PostgreSQL
state store and audit log. Exactly one leads; a quarantine sent to one replica holds on all of them
within 2 s and survives their polls and a restart of every replica; SIGKILL of the leader hands the
lease on within 15 s with the statistics carried over."""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path

import pytest

from proxy.testing import run_server, wait_until
from reference_upstream.app import create_sim_app
from tests.fleet import Replica, fleet, leaders, one_leader
from tests.pg import PostgresServer


@pytest.mark.timeout(300)
def test_a_fleet_on_postgresql_leads_once_quarantines_once_and_resumes(tmp_path: Path) -> None:
    """Leader, quarantine, SIGKILL and restart checks of the fleet design, on real processes."""
    pg = PostgresServer()
    pg.start()
    try:
        with (
            run_server(create_sim_app("abliterated", models=("sim-model",))) as sim,
            fleet(
                tmp_path,
                3,
                upstreams=[{"name": "sim", "base_url": sim.url + "/v1", "models": ["sim-model"]}],
                audit={"url": pg.url},
                state={"url": pg.url},
                # a threshold no run here reaches: the statistic only climbs, so "carried over" is visible
                canary={"interval_seconds": 1.0, "per_round": 1, "harmful": {"p0": 0.1, "p1": 0.5, "h": 100000}},
            ) as replicas,
        ):
            # exactly one leader, and every replica names the same one
            assert wait_until(lambda: one_leader(replicas), timeout=20)
            (leader_id,) = leaders(replicas)
            ids = {r.state()["replica"] for r in replicas}
            assert leader_id in ids and len(ids) == 3

            # the abliterated model's harmful statistic climbs (canaries answered), mirrored everywhere
            def stat(r: Replica) -> float:
                suites = r.state()["models"].get("sim-model", {}).get("suites", {})
                return float(suites.get("harmful", {}).get("statistic", 0.0))

            assert wait_until(lambda: all(stat(r) > 0 for r in replicas), timeout=30)

            # an operator's quarantine through replica 1 holds on replicas 2 and 3 within 2 s
            r1, r2, r3 = replicas
            answer = r1.admin("quarantine/sim-model")
            assert answer.status_code == 200 and answer.json()["stored"] is True
            decided = time.monotonic()
            assert wait_until(lambda: r2.chat() == 503 and r3.chat() == 503, timeout=2.0, interval=0.1)
            assert time.monotonic() - decided <= 2.5
            time.sleep(3)  # several polls later, nobody has undone it
            assert {r.chat() for r in replicas} == {503}

            # SIGKILL the leader: another replica leads within 15 s, the statistic carried over
            leader = next(r for r in replicas if r.state()["replica"] == leader_id)
            others = [r for r in replicas if r is not leader]
            before = max(stat(r) for r in others)
            assert leader.proc is not None
            leader.proc.send_signal(signal.SIGKILL)
            leader.proc.wait(10)
            killed = time.monotonic()

            def handed_on() -> bool:
                named = {r.state()["leader"] for r in others}
                return len(named) == 1 and not named & {None, leader_id}

            assert wait_until(handed_on, timeout=15, interval=0.2)
            assert time.monotonic() - killed <= 15.5
            assert min(stat(r) for r in others) >= before * 0.9  # resumed from the store, not from zero
            # the killed leader and the new one never sent canaries at the same time
            assert wait_until(lambda: len(canary_spans(pg.url)) >= 2, timeout=15)
            assert_no_overlap(canary_spans(pg.url))

            # every replica restarted: the quarantine still holds as soon as they are up
            for r in replicas:
                r.stop()
            for r in replicas:
                r.start()
            assert {r.chat() for r in replicas} == {503}
            assert min(stat(r) for r in replicas) >= before * 0.9
            r2.admin("quarantine/sim-model/clear").raise_for_status()
            assert wait_until(lambda: {r.chat() for r in replicas} == {200}, timeout=3.0, interval=0.1)
    finally:
        pg.destroy()


def canary_spans(url: str) -> dict[str, list[tuple[str, str]]]:
    """Canary exchanges in the shared audit log, by the process (audit writer) that sent them."""
    from proxy.testing import audit_records

    spans: dict[str, list[tuple[str, str]]] = {}
    for r in audit_records(url, traffic="canary"):
        spans.setdefault(r["writer"], []).append((r["ts_start"], r["ts_end"]))
    return spans


def assert_no_overlap(spans: dict[str, list[tuple[str, str]]]) -> None:
    """One sender's canaries all end before the next sender's first begins."""
    ranges = sorted((min(s for s, _ in v), max(e for _, e in v)) for v in spans.values())
    for (_, end), (start, _) in itertools.pairwise(ranges):
        assert end <= start, ranges
