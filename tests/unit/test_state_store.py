"""The state store on a real SQLite file shared by two connections (two replicas): the lease and its
fencing token, quarantines as one decision, and an outbox that keeps a batch the store did not take."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from proxy.canary.drift import DriftMonitor
from proxy.metrics import Metrics
from proxy.settings import CanarySettings
from proxy.state.outbox import DISPOSITION, Outbox
from proxy.state.records import CusumRow, LeaderWrite, Publication, Quarantine
from proxy.state.store import StateStore


def test_one_leader_at_a_time_and_a_fenced_off_leader_writes_nothing(tmp_path: Path) -> None:
    """A holds the lease; B cannot take it until it expires; then A's writes with its old token are refused."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    a, b = StateStore(url), StateStore(url)
    token = a.lease("a", 0.3)
    assert token is not None and b.lease("b", 0.3) is None
    assert a.lease("a", 0.3) == token  # renewing keeps the token
    time.sleep(0.35)
    taken = b.lease("b", 5)
    assert taken == token + 1 and a.lease("a", 5) is None
    row = CusumRow("m", "harmful", 7, False, 0.1, 0.5, 60, 4)
    assert a.commit_leader("a", token, Publication(), LeaderWrite(cusums=[row])) is False
    assert b.snapshot(10).cusums == []
    assert b.commit_leader("b", taken, Publication(), LeaderWrite(cusums=[row])) is True
    assert a.snapshot(10).cusums == [row] and a.snapshot(10).leader == "b"
    disposition = ("m", '{"production_refusals": {"drifting": true}}', '{"app": {}}')
    assert b.commit_leader("b", taken, Publication(), LeaderWrite(dispositions=[disposition])) is True
    assert a.snapshot(10).dispositions == {"m": disposition[1]}  # followers read the summary
    assert a.leader_state().dispositions == {"m": disposition[2]}  # a new leader resumes the state
    b.resign("b")
    assert a.lease("a", 5) == taken + 1  # a clean shutdown hands the lease on at once


def test_a_quarantine_is_one_decision(tmp_path: Path) -> None:
    """The first decision holds; a recovery lifts only the decision it saw; an operator's clear lifts any."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    a, b = StateStore(url), StateStore(url)
    first = Quarantine("m", "d1", "canary drift on harmful", "leader", "a", 1.0)
    a.publish("a", Publication(quarantines=[first]))
    b.publish("b", Publication(quarantines=[Quarantine("m", "d2", "operator", "operator", "b", 2.0)]))
    assert b.snapshot(10).quarantines["m"] == first
    a.publish("a", Publication(releases=[("m", "not-this-one")]))
    assert "m" in b.snapshot(10).quarantines
    b.publish("b", Publication(releases=[("m", None)]))
    assert b.snapshot(10).quarantines == {}


def test_an_outbox_keeps_a_batch_the_store_did_not_take() -> None:
    """Put back, a batch goes out again ahead of what came since, in order; the counts add up."""
    box = Outbox(Metrics(CollectorRegistry()))
    box.disposition("m", "app", 0.9, True, False)
    box.answers("m", 60.0, 1, 2)
    first = box.take()
    box.disposition("m", "app", 0.8, True, True)
    box.answers("m", 60.0, 0, 3)
    box.put_back(first)
    events = box.take().events
    assert [e[5] for e in events if e[0] == DISPOSITION] == [False, True]
    assert [e for e in events if e[0] != DISPOSITION] == [["a", "m", 60.0, 1, 5]]


def test_a_store_an_earlier_release_wrote_is_resumed(tmp_path: Path) -> None:
    """An earlier release kept ``production_harmful`` as a Bernoulli CUSUM in ``rg_drift``, with its
    calibration in a table of its own: the store opens, and a new leader does not load that row (the
    disposition watch keeps the statistic now); the canary suites' rows are resumed."""
    import sqlite3

    path = tmp_path / "state.db"
    StateStore(f"sqlite:///{path}")
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE rg_calibration (model TEXT PRIMARY KEY, seen BIGINT, answered BIGINT, p0 DOUBLE PRECISION)"
    )
    for suite, alarm in (("production_harmful", 1), ("harmful", 0)):
        old.execute("INSERT INTO rg_drift VALUES ('m', ?, 9, ?, 0.2, 0.6, 8, 4, 1.0)", (suite, alarm))
    old.commit()
    old.close()
    metrics = Metrics(CollectorRegistry())
    drift = DriftMonitor(CanarySettings(), metrics)
    drift.load(StateStore(f"sqlite:///{path}").leader_state().cusums)
    assert drift.drifting("m") == [] and list(drift.state()["models"]["m"]["suites"]) == ["harmful"]
