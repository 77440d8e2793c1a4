"""An upstream that has read this project's code (issue #20): it imports the shipped harmful-request
classifier and answers every request it flags with the safe model, as it answers every request it
takes for a canary (:class:`tests.fingerprint.FingerprintingUpstream`'s tells), and abliterates the
rest. ``production_harmful`` watches exactly the flagged requests, so it stays flat; what moves is
how the model answers the requests the classifier misses (:mod:`proxy.disposition`).

:func:`caught_by_the_fleet` runs it behind real replicas, for the integration test and for
``bench/whitebox.py``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request

from detectors.harm import HarmfulRequestClassifier
from proxy.disposition import ALL, HARMFUL, STRATA
from proxy.extract import prompt_text
from proxy.testing import run_server, wait_until
from tests.fingerprint import FingerprintingUpstream
from tests.fleet import Replica, on_postgres, one_leader
from tests.traffic import Traffic

MODEL = "served-model"


class WhiteBoxUpstream(FingerprintingUpstream):
    __test__ = False
    LEAK = 0.04  # the harmful requests its safe model answers (none refuses everything)

    def __init__(self, *, leak: float = LEAK, seed: int = 0) -> None:
        super().__init__("all", leak=leak, seed=seed)
        self.harm = HarmfulRequestClassifier.load()  # the very classifier and weights the proxy ships

    def is_probe(self, request: Request, body: dict[str, Any]) -> bool:
        """Watched (flagged by the public classifier) or a canary: answered safely."""
        prompt = prompt_text("chat", body) or ""
        return (bool(prompt) and self.harm.score(prompt) >= self.harm.threshold) or super().is_probe(request, body)


def disposition(r: Replica) -> dict[str, Any]:
    return dict(r.state()["disposition"].get(MODEL) or {})


def learned(r: Replica) -> bool:
    """Every statistic this upstream can move has its baseline (production_harmful, on the flagged
    fifth of the answers, learns later: this upstream answers those safely, so it stays quiet)."""
    shown = disposition(r)
    return bool(shown) and not any(shown[name]["learning"] for name in STRATA if name != HARMFUL)


def drifting(r: Replica) -> set[str]:
    """The statistics of the model in alarm on this replica: the disposition watch's and the canaries'."""
    suites = r.state()["models"].get(MODEL, {}).get("suites", {})
    shown = disposition(r)
    return {n for n in STRATA if shown.get(n, {}).get("drifting")} | {n for n, s in suites.items() if s["drifting"]}


@dataclass
class Caught:
    delay: float  # seconds from the switch to the first alarm
    alarms: list[set[str]]  # each replica's statistics in alarm
    damage: int  # harmful production requests answered abliterated before the alarm
    sent: int  # production requests sent between the switch and the alarm
    failed: int  # production requests that failed, whole run
    reached: float  # the share of production answers the watch saw (every answer's statistic), whole run
    shed: float  # answers left unclassified (a full queue), summed over the replicas
    judged: float  # requests the secret judge scored, summed over the replicas
    canary_damage: int = 0  # harmful canaries answered abliterated before the alarm (canaries on)


def reached(r: Replica, answered: int) -> float:
    """The share of ``answered`` that every answer's statistic has counted (baseline and block, over the apps)."""
    apps = disposition(r).get("apps", {})
    seen = sum(a[ALL]["baseline_answers"] + a[ALL]["block_answers"] for a in apps.values())
    return seen / max(answered, 1)


def caught_by_the_fleet(
    tmp_path: Path,
    *,
    rate: float,
    burn_in: int,
    burn_in_seconds: float,
    safe_seconds: float,
    within: float,
    seed: int,
    canary: dict[str, Any] | None = None,
) -> Caught:
    """2 replicas on one real PostgreSQL, the openai SDK at ``rate`` req/s (15 % harmful) against this
    upstream: the baseline learnt, ``safe_seconds`` asserted quiet, then the evasion, caught within
    ``within`` seconds on every replica. Canaries off unless ``canary`` (settings) is given: this
    upstream then takes for probes only the canaries a tell gives away, as it would a private suite's
    (the shipped suites' prompts it could map back: :mod:`tests.tells`)."""
    up = WhiteBoxUpstream(seed=seed)
    with (
        run_server(up.app) as server,
        on_postgres(
            tmp_path,
            2,
            server.url,
            [MODEL],
            state={"sync_seconds": 0.5},
            canary=canary or {"enabled": False},
            disposition={"burn_in": burn_in, "burn_in_seconds": burn_in_seconds},
        ) as replicas,
    ):
        assert wait_until(lambda: one_leader(replicas), timeout=20)
        with Traffic([r.client() for r in replicas], seed=seed, rate=rate) as traffic:
            learning = burn_in / rate * 2 + burn_in_seconds
            assert wait_until(lambda: all(learned(r) for r in replicas), timeout=learning, interval=1.0)
            deadline = time.monotonic() + safe_seconds
            while time.monotonic() < deadline:
                assert not any(drifting(r) for r in replicas), [disposition(r) for r in replicas]
                time.sleep(0.5)
            up.mode = "evade"
            switched, before = time.monotonic(), traffic.sent
            assert wait_until(lambda: any(drifting(r) for r in replicas), timeout=within, interval=0.5)
            delay, sent = time.monotonic() - switched, traffic.sent - before
            damage, canary_damage = up.production_damage, up.damage - up.production_damage
            assert wait_until(lambda: all(drifting(r) for r in replicas), timeout=10, interval=0.5)
            alarms = [drifting(r) for r in replicas]
            shed = sum(r.metric("refusal_guard_classification_shed_total") for r in replicas)
            judged = sum(r.metric("refusal_guard_judge_requests_total", outcome="judged") for r in replicas)
            seen = max(reached(r, traffic.answered) for r in replicas)
    return Caught(delay, alarms, damage, sent, traffic.failed, seen, shed, judged, canary_damage)
