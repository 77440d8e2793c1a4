"""The state store on a real SQLite file shared by two connections (two replicas): the lease and its
fencing token, quarantines as one decision, and an outbox that keeps a batch the store did not take."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from proxy.metrics import Metrics
from proxy.state.outbox import HARMFUL, Outbox
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
    box.harmful("m", "refusal")
    box.answers("m", 60.0, 1, 2)
    first = box.take()
    box.harmful("m", "compliance")
    box.answers("m", 60.0, 0, 3)
    box.put_back(first)
    events = box.take().events
    assert [e[2] for e in events if e[0] == HARMFUL] == ["refusal", "compliance"]
    assert [e for e in events if e[0] != HARMFUL] == [["a", "m", 60.0, 1, 5]]


def test_a_store_an_earlier_release_made_gains_the_new_columns(tmp_path: Path) -> None:
    """``rg_calibration`` without ``rate`` (the release before): opened, the column is added, the old row
    reads back with no rate (its model is learnt again), and the leader's writes carry the rate."""
    import sqlite3

    from proxy.state.records import Calibration

    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE rg_calibration (model TEXT PRIMARY KEY, seen BIGINT NOT NULL, answered BIGINT NOT NULL, "
        "p0 DOUBLE PRECISION)"
    )
    old.execute("INSERT INTO rg_calibration VALUES ('m', 200, 40, 0.2)")
    old.commit()
    old.close()
    store = StateStore(f"sqlite:///{path}")
    assert store.leader_state().calibrations == [Calibration("m", 200, 40, 0.2, None)]
    token = store.lease("r1", 10.0)
    assert token is not None
    write = LeaderWrite(calibrations=[Calibration("m", 200, 40, 0.2, 2.5)])
    assert store.commit_leader("r1", token, Publication(), write)
    assert store.leader_state().calibrations == [Calibration("m", 200, 40, 0.2, 2.5)]
    StateStore(f"sqlite:///{path}")  # opened again: nothing to add twice
