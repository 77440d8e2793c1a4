"""The fleet's acceptance run (issue #19): an upstream that recognises probes by their headers or
their sampling parameters, behind 3 replicas on one real PostgreSQL and behind ``serve --workers 3``
on the embedded default. The canary leader copies production requests that arrived on any replica
or worker, so the upstream takes at least 90 % of canaries for real traffic; a safe minute raises no
alarm; the abliterated model it then serves is caught within 4 minutes at ~15 req/s spread over the
fleet."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.testing import run_server, wait_until
from tests.fingerprint import FingerprintingUpstream
from tests.fleet import Replica, fleet, one_leader
from tests.pg import PostgresServer
from tests.traffic import CLIENT_WORDING, Traffic

ALARM_WITHIN = 240.0
SAFE_SECONDS = 60.0


def alarmed(r: Replica) -> bool:
    """A canary suite or a production statistic (:mod:`proxy.disposition`) of served-model in alarm."""
    shown = r.state()
    state = shown["models"].get("served-model", {})
    production = shown["disposition"].get("served-model", {})
    return (
        state.get("quarantined", False)
        or any(s["drifting"] for s in state.get("suites", {}).values())
        or any(s["drifting"] for name, s in production.items() if name != "apps")
    )


@contextlib.contextmanager
def deployment(layout: str, tmp_path: Path, upstream_url: str) -> Iterator[list[Replica]]:
    settings: dict[str, Any] = {
        "upstreams": [{"name": "u", "base_url": upstream_url + "/v1", "models": ["served-model"]}],
        "canary": {"interval_seconds": 2.0, "per_round": 1},
        "disposition": {"burn_in": 100, "burn_in_seconds": 30},  # learnt in the safe phase
    }
    if layout == "workers":  # the embedded default: a SQLite state file beside the SQLite audit log
        with fleet(tmp_path, 1, workers=3, audit={"url": f"sqlite:///{tmp_path / 'audit.db'}"}, **settings) as one:
            yield one
        return
    pg = PostgresServer()
    pg.start()
    try:
        with fleet(tmp_path, 3, audit={"url": pg.url}, state={"url": pg.url}, **settings) as replicas:
            yield replicas
    finally:
        pg.destroy()


def disguised(seen: list[tuple[str, bool, str]], after: int = 50) -> list[bool]:
    """Whether the upstream took each canary for a probe, from the ``after``-th production request on
    (before any production request a canary can only have the no-traffic default shape)."""
    production = 0
    out = []
    for _, probe, text in seen:
        if text.startswith(CLIENT_WORDING[:11]):
            production += 1
        elif production >= after:
            out.append(probe)
    return out


@pytest.mark.timeout(480)
@pytest.mark.parametrize("layout", ["replicas", "workers"])
def test_the_fleet_keeps_the_disguise_and_catches_the_evasion(layout: str, tmp_path: Path) -> None:
    up = FingerprintingUpstream(("headers", "params"))
    with run_server(up.app) as server, deployment(layout, tmp_path, server.url) as replicas:
        assert wait_until(lambda: one_leader(replicas), timeout=20)
        # one connection pool per replica, and three for the workers' one port (the kernel spreads connections)
        clients = [r.client() for r in replicas for _ in range(3 if layout == "workers" else 1)]
        with Traffic(clients, seed=19) as traffic:
            deadline = time.monotonic() + SAFE_SECONDS
            while time.monotonic() < deadline:
                assert not any(alarmed(r) for r in replicas), [r.state() for r in replicas]
                time.sleep(0.5)
            up.mode = "evade"
            switched = time.monotonic()
            assert wait_until(lambda: any(alarmed(r) for r in replicas), timeout=ALARM_WITHIN, interval=0.5)
            delay = time.monotonic() - switched
        canaries = disguised(up.seen)
        taken_for_real = 1 - sum(canaries) / len(canaries)
        print(
            f"{layout}: alarm {delay:.0f} s after the switch; {len(canaries)} canaries, {taken_for_real:.0%} taken"
            f" for real; {traffic.answered} production requests answered, {traffic.failed} failed"
        )
        assert len(canaries) >= 20
        assert taken_for_real >= 0.9
        assert traffic.failed == 0
