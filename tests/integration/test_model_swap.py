"""A served model swapped for one that refuses just as often: the refusal suites stay quiet, the
fingerprint does not (:mod:`proxy.fingerprint`).

The reference upstream behind a real proxy, canaries on and production traffic from the openai SDK;
after the fingerprint's baseline, the upstream's tokenizer is swapped (the same answers, counted
another way: ``/sim/mode {"tokenizer": "bytes"}``). The tokenizer tier flags it within 20 answers,
as a ``model_changed`` transition in the audit log, on ``/canary/state`` and in
``refusal_guard_model_changed``; no canary suite moves; a stable run of the same length flags nothing;
an operator's new baseline clears it. A new ``system_fingerprint`` is the identity tier's.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from proxy.settings import ClientKey
from proxy.testing import ServerThread, run_server
from reference_upstream.app import create_sim_app
from reference_upstream.corpus import load_corpus
from tests.conftest import Proxy

ADMIN = "admin-key-for-the-swap-test-0123456789"
CORPUS = load_corpus()
PROMPTS = CORPUS.benign_prompts()
CHANGED = "refusal_guard_model_changed"
SYNC = 0.2


@pytest.fixture
def sim() -> Iterator[ServerThread]:
    with run_server(create_sim_app("safe")) as server:
        yield server


@pytest.fixture
def proxy(sim: ServerThread, start_proxy: Any, tmp_path: Path) -> Proxy:
    return start_proxy(
        {
            "upstreams": [{"name": "sim", "base_url": sim.url + "/v1", "models": ["sim-model"]}],
            "canary": {"enabled": True, "interval_seconds": 0.5, "per_round": 1, "seed": 11},
            "audit": {"enabled": True, "url": f"sqlite:///{tmp_path}/audit.db", "flush_seconds": 0.05},
            "admin_key_sha256": ClientKey.digest(ADMIN),
            "state": {"sync_seconds": SYNC},  # the leader reads every replica's answers once per sync
            # every answer read, though the test sends them faster than the default five a second
            "fingerprint": {"production_per_second": 1000},
        }
    )


def answered(p: Proxy) -> float:
    """Answers the proxy judged for the model so far, production and canaries."""
    return sum(
        p.metric("refusal_guard_responses_total", model="sim-model", upstream="sim", traffic=t, verdict=v)
        for t in ("production", "canary")
        for v in ("refusal", "partial_refusal", "compliance")
    )


def ask(p: Proxy, client: OpenAI, rng: random.Random, n: int) -> None:
    for _ in range(n):
        before = answered(p)
        client.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": rng.choice(PROMPTS)}])
        assert p.wait_for(lambda b=before: answered(p) > b)


def changed(p: Proxy, tier: str) -> float:
    return p.metric(CHANGED, model="sim-model", tier=tier)


def flagged(p: Proxy, tier: str) -> bool:
    """Whether the leader flags ``tier`` once it has read what was answered so far (two syncs)."""
    return p.wait_for(lambda: changed(p, tier) == 1, timeout=2 * SYNC + 0.1)


def test_a_tokenizer_swap_is_flagged_and_the_refusal_suites_stay_quiet(
    proxy: Proxy, sim: ServerThread, tmp_path: Path
) -> None:
    rng = random.Random(4)
    client = OpenAI(base_url=proxy.url + "/v1", api_key="unused")
    ask(proxy, client, rng, 40)  # the baseline (30 answers per count), then a stable stretch
    assert not flagged(proxy, "tokenizer") and changed(proxy, "identity") == 0
    ask(proxy, client, rng, 20)  # a stable run as long as the detection window below: nothing
    assert not flagged(proxy, "tokenizer")

    httpx.post(sim.url + "/sim/mode", json={"tokenizer": "bytes"}).raise_for_status()
    start = answered(proxy)
    for _ in range(20):
        ask(proxy, client, rng, 1)
        if flagged(proxy, "tokenizer"):
            break
    needed = answered(proxy) - start
    assert changed(proxy, "tokenizer") == 1 and needed <= 20, needed
    print(f"tokenizer swap flagged after {needed:.0f} answers")  # reported in the note

    drift = proxy.app.state.drift.state()["models"]["sim-model"]
    assert not any(s.get("drifting") for s in drift["suites"].values()), drift  # the refusal suites saw nothing
    state = httpx.get(proxy.url + "/canary/state").json()["fingerprint"]["sim-model"]
    assert state["changed"]["tokenizer"]["count"] in ("prompt_tokens", "completion_tokens")
    assert proxy.wait_for(lambda: audited(tmp_path, "model_changed"))
    (event,) = audited(tmp_path, "model_changed")
    assert event["suite"] == "tokenizer" and event["model"] == "sim-model"

    httpx.post(sim.url + "/sim/mode", json={"fingerprint": "fp_other"}).raise_for_status()
    ask(proxy, client, rng, 4)
    assert flagged(proxy, "identity")

    r = httpx.post(proxy.url + "/admin/fingerprint/sim-model/baseline", headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200 and r.json()["rebaselined"] is True and r.json()["stored"] is True
    assert changed(proxy, "tokenizer") == 0 and changed(proxy, "identity") == 0  # the leader: this one process


def audited(tmp: Path, transition: str) -> list[dict[str, Any]]:
    with sqlite3.connect(tmp / "audit.db") as c:
        rows = c.execute("SELECT record FROM audit WHERE traffic = 'event'").fetchall()
    events = [json.loads(text)["event"] for (text,) in rows]
    return [e for e in events if e.get("transition") == transition]
