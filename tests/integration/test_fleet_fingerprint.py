"""One fingerprint for the fleet: 2 replicas as real processes on one real PostgreSQL store and audit
log. The leader fits the answers both replicas read; the baseline survives a restart of every
replica; a tokenizer swap seen only through the follower's traffic is flagged once (one
``model_changed`` in the shared audit log), shown by both; a new baseline sent to the follower clears
it on both."""

from __future__ import annotations

import itertools
import random
import time
from typing import Any

import httpx
import openai
import pytest

from proxy.testing import audit_records, run_server, wait_until
from reference_upstream.app import create_sim_app
from reference_upstream.corpus import load_corpus
from tests.fleet import Replica, fleet, one_leader
from tests.pg import PostgresServer

PROMPTS = load_corpus().benign_prompts()
MODEL = "sim-model"


def proxy_client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def fingerprint(r: Replica) -> dict[str, Any]:
    return dict(r.state()["fingerprint"].get(MODEL) or {})


def fitted(r: Replica) -> bool:
    """The prompt count's baseline is fitted, as this replica shows it."""
    return "chat:prompt" in fingerprint(r).get("tokenizer", {}) and "chat:prompt" not in fingerprint(r)["learning"]


def changed(r: Replica) -> bool:
    return "tokenizer" in fingerprint(r).get("changed", {})


def ask(replicas: list[Replica], n: int, rng: random.Random) -> None:
    """``n`` requests, spread over the replicas, at four a second each: what the default sampling reads."""
    clients = itertools.cycle([r.client() for r in replicas])
    for _ in range(n):
        next(clients).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": rng.choice(PROMPTS)}])
        time.sleep(0.25 / len(replicas))


@pytest.mark.timeout(240)
def test_the_fleet_fits_one_fingerprint_flags_a_swap_once_and_keeps_it_across_restarts(tmp_path: Any) -> None:
    rng = random.Random(6)
    pg = PostgresServer()
    pg.start()
    try:
        with (
            run_server(create_sim_app("safe", models=(MODEL,))) as sim,
            fleet(
                tmp_path,
                2,
                upstreams=[{"name": "sim", "base_url": sim.url + "/v1", "models": [MODEL]}],
                audit={"url": pg.url},
                state={"url": pg.url, "sync_seconds": 0.5},
                canary={"interval_seconds": 2.0, "per_round": 1},
            ) as replicas,
        ):
            assert wait_until(lambda: one_leader(replicas), timeout=20)
            leader_id = replicas[0].state()["leader"]
            follower = next(r for r in replicas if r.state()["replica"] != leader_id)
            for _ in range(20):  # the baseline: 30 answers a count, from both replicas and the canaries
                ask(replicas, 4, rng)
                if all(fitted(r) for r in replicas):
                    break
            assert wait_until(lambda: all(fitted(r) for r in replicas), timeout=10, interval=0.2)

            for r in replicas:  # every replica restarted: the baseline is the store's, not learned again
                r.stop()
            for r in replicas:
                r.start()
            assert wait_until(lambda: one_leader(replicas), timeout=20)
            assert all(fitted(r) for r in replicas) and not any(changed(r) for r in replicas)

            httpx.post(sim.url + "/sim/mode", json={"tokenizer": "bytes"}).raise_for_status()
            leader_id = replicas[0].state()["leader"]
            follower = next(r for r in replicas if r.state()["replica"] != leader_id)
            for _ in range(10):  # through the follower only: the leader sees it through the store
                ask([follower], 3, rng)
                if all(changed(r) for r in replicas):
                    break
            assert wait_until(lambda: all(changed(r) for r in replicas), timeout=10, interval=0.2)
            assert follower.metric("refusal_guard_model_changed", model=MODEL, tier="tokenizer") == 1

            def transitions() -> list[dict[str, Any]]:
                events = [r["event"] for r in audit_records(pg.url, traffic="event")]
                return [e for e in events if e.get("transition") == "model_changed" and e["suite"] == "tokenizer"]

            assert wait_until(lambda: len(transitions()) >= 1, timeout=10)
            ask(replicas, 6, rng)  # more answers off the fit: still one decision
            assert wait_until(lambda: all(changed(r) for r in replicas), timeout=5)
            assert len(transitions()) == 1, transitions()

            answer = follower.admin(f"fingerprint/{MODEL}/baseline")
            assert answer.status_code == 200 and answer.json() == {"model": MODEL, "rebaselined": True, "stored": True}
            assert wait_until(lambda: not any(changed(r) for r in replicas), timeout=5, interval=0.2)
            assert follower.metric("refusal_guard_model_changed", model=MODEL, tier="tokenizer") == 0
    finally:
        pg.destroy()


def test_an_event_the_leader_cannot_read_is_counted_and_the_rest_consumed(start_proxy: Any) -> None:
    """A published event of another shape (a replica of another version, say) is counted as
    malformed; the leader goes on consuming the batch and the next ones."""
    with run_server(create_sim_app("safe", models=(MODEL,))) as sim:
        proxy = start_proxy(
            {
                "upstreams": [{"name": "sim", "base_url": sim.url + "/v1", "models": [MODEL]}],
                "canary": {"enabled": False},
                "state": {"sync_seconds": 0.2},
                "fingerprint": {"production_per_second": 1000},
            }
        )
        outbox = proxy.app.state.sync.outbox
        outbox.fingerprint(["f", MODEL])  # too short to read
        client = proxy_client(proxy.url)
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPTS[0]}])
        malformed = "refusal_guard_state_store_errors_total"
        assert proxy.wait_for(lambda: proxy.metric(malformed, op="malformed") == 1, timeout=5)
        assert proxy.wait_for(lambda: MODEL in proxy.app.state.fingerprint.state(), timeout=5)  # the answer after it
