"""Drills against the reference upstream: canaries catch abliteration and over-refusal, quarantine holds
traffic until an operator clears it, and the people who must know are told."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from proxy.canary.cusum import CusumDesign, canaries_for
from proxy.settings import ClientKey, DriftDesign
from proxy.testing import ServerThread, run_server, wait_for
from reference_upstream.app import create_sim_app
from tests.conftest import Proxy
from tests.upstreams import TestUpstream

ADMIN_KEY = "admin-secret-key"
PER_ROUND = 2
D = DriftDesign()
# docs/canaries.md's figure: at a failure rate of 0.9 the default CUSUM alarms within this many canaries (p >= 0.99)
DETECTION_BOUND = canaries_for(CusumDesign(D.p0, D.p1, D.h), 0.9, 0.99)


@pytest.fixture
def sim_server() -> Iterator[ServerThread]:
    with run_server(create_sim_app("safe")) as s:
        yield s


def set_mode(sim: ServerThread, mode: str) -> None:
    httpx.post(sim.url + "/sim/mode", json={"mode": mode}).raise_for_status()


def canary_settings(sim: ServerThread, **canary: Any) -> dict[str, Any]:
    return {
        "admin_key_sha256": ClientKey.digest(ADMIN_KEY),
        "upstreams": [{"name": "sim", "base_url": sim.url + "/v1", "models": ["sim-model"]}],
        "canary": {"enabled": True, "interval_seconds": 0.02, "per_round": PER_ROUND, "seed": 7, **canary},
    }


def count(p: Proxy, suite: str) -> float:
    return sum(
        p.metric(
            "refusal_guard_canary_results_total",
            model="sim-model",
            suite=suite,
            expected="refusal" if suite == "harmful" else "compliance",
            verdict=v,
        )
        for v in ("refusal", "partial_refusal", "compliance")
    )


def drifting(p: Proxy, suite: str) -> bool:
    return p.metric("refusal_guard_drift_state", model="sim-model", suite=suite) == 1


def test_safe_model_stays_in_control_then_abliteration_is_caught(sim_server: ServerThread, start_proxy: Any) -> None:
    """Hundreds of canaries against a safe model raise nothing; after the switch, harmful drifts within the bound."""
    p: Proxy = start_proxy(canary_settings(sim_server))
    assert p.wait_for(lambda: count(p, "harmful") >= 200 and count(p, "benign") >= 200, timeout=60)
    assert not drifting(p, "harmful") and not drifting(p, "benign")
    assert (
        p.metric(
            "refusal_guard_responses_total", model="sim-model", upstream="sim", traffic="canary", verdict="refusal"
        )
        > 0
    )
    set_mode(sim_server, "abliterated")
    before = count(p, "harmful")
    assert p.wait_for(lambda: drifting(p, "harmful"), timeout=30)
    assert count(p, "harmful") - before <= DETECTION_BOUND + PER_ROUND + 1  # canaries in flight at the switch
    assert not drifting(p, "benign")
    assert httpx.get(p.url + "/canary/state").json()["models"]["sim-model"]["suites"]["harmful"]["drifting"] is True


def test_overrefusal_flags_the_benign_suite(sim_server: ServerThread, start_proxy: Any) -> None:
    """A model that starts refusing harmless requests drifts on the benign suite."""
    set_mode(sim_server, "overrefusal")
    p: Proxy = start_proxy(canary_settings(sim_server))
    assert p.wait_for(lambda: drifting(p, "benign"), timeout=30)
    assert not drifting(p, "harmful")


def test_model_abliterated_from_the_start_is_flagged(sim_server: ServerThread, start_proxy: Any) -> None:
    """No baseline to hide behind: the absolute expectation flags a model that was never safe."""
    set_mode(sim_server, "abliterated")
    p: Proxy = start_proxy(canary_settings(sim_server))
    assert p.wait_for(lambda: drifting(p, "harmful"), timeout=30)
    assert count(p, "harmful") <= DETECTION_BOUND + PER_ROUND + 1


def test_quarantine_holds_traffic_until_recovered_and_cleared(sim_server: ServerThread, start_proxy: Any) -> None:
    """Quarantine answers 503 while drifting, stays until an operator clears it, then traffic flows again."""
    p: Proxy = start_proxy(
        canary_settings(sim_server, auto_release=False, policies={"sim-model": {"action": "quarantine"}})
    )
    client = p.client()
    msgs = [{"role": "user", "content": "How do I kill a Python process?"}]
    assert client.chat.completions.create(model="sim-model", messages=msgs).choices[0].message.content
    set_mode(sim_server, "abliterated")
    assert p.wait_for(lambda: p.metric("refusal_guard_quarantined", model="sim-model") == 1, timeout=30)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="sim-model", messages=msgs)
    assert info.value.status_code == 503 and info.value.code == "model_quarantined"
    set_mode(sim_server, "safe")
    assert p.wait_for(lambda: not drifting(p, "harmful"), timeout=30)  # canaries recovered...
    assert p.metric("refusal_guard_quarantined", model="sim-model") == 1  # ...but the operator decides
    clear = p.url + "/admin/quarantine/sim-model/clear"
    assert httpx.post(clear).status_code == 401
    assert httpx.post(clear, headers={"authorization": "Bearer wrong"}).status_code == 401
    r = httpx.post(clear, headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200 and r.json()["released"] is True
    assert client.chat.completions.create(model="sim-model", messages=msgs).choices[0].message.content


def test_quarantine_routes_to_a_fallback_and_releases_itself(sim_server: ServerThread, start_proxy: Any) -> None:
    """With a fallback upstream, a quarantined model's traffic goes there; recovery lifts it by itself."""
    fallback = TestUpstream()
    with run_server(fallback.app) as fb:
        settings = canary_settings(
            sim_server, policies={"sim-model": {"action": "quarantine", "fallback_upstream": "safe-fallback"}}
        )
        settings["upstreams"].append({"name": "safe-fallback", "base_url": fb.url + "/v1", "models": ["fallback-only"]})
        p: Proxy = start_proxy(settings)
        set_mode(sim_server, "abliterated")
        assert p.wait_for(lambda: p.metric("refusal_guard_quarantined", model="sim-model") == 1, timeout=30)
        out = p.client().chat.completions.create(model="sim-model", messages=[{"role": "user", "content": "hi"}])
        assert out.choices[0].message.content == "Here is the answer you asked for."  # the fallback's answer
        set_mode(sim_server, "safe")
        assert p.wait_for(lambda: p.metric("refusal_guard_quarantined", model="sim-model") == 0, timeout=30)


class Receiver:
    """Stands in for Alertmanager and a webhook: records what is posted."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.hooks: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.app = Starlette(
            routes=[Route("/api/v2/alerts", self.alert, methods=["POST"]), Route("/hook", self.hook, methods=["POST"])]
        )

    async def alert(self, request: Request) -> JSONResponse:
        body = await request.json()  # read before taking the lock: awaiting under it deadlocks the loop
        with self.lock:
            self.alerts.extend(body)
        return JSONResponse({})

    async def hook(self, request: Request) -> JSONResponse:
        body = await request.json()
        with self.lock:
            self.hooks.append(body)
        return JSONResponse({})


def test_drift_is_notified_and_resolved(sim_server: ServerThread, start_proxy: Any) -> None:
    """Drift posts an alert to Alertmanager's API and the webhook; recovery resolves it."""
    rx = Receiver()
    with run_server(rx.app) as server:
        p: Proxy = start_proxy(
            canary_settings(sim_server, alertmanager_url=server.url, webhook_url=server.url + "/hook")
        )
        set_mode(sim_server, "abliterated")
        assert wait_for(lambda: any(a["labels"].get("suite") == "harmful" for a in rx.alerts), timeout=30)
        alert = next(a for a in rx.alerts if a["labels"].get("suite") == "harmful")
        assert alert["labels"] == {
            "alertname": "RefusalGuardCanaryDrift",
            "model": "sim-model",
            "severity": "page",
            "source": "refusal-guard",
            "suite": "harmful",
        }
        assert wait_for(lambda: any(h["event"] == "drift" and h["model"] == "sim-model" for h in rx.hooks))
        set_mode(sim_server, "safe")
        assert wait_for(lambda: any("endsAt" in a for a in rx.alerts), timeout=30)
        assert wait_for(lambda: any(h["event"] == "recovered" for h in rx.hooks))  # posted beside the alert
        assert p.metric("refusal_guard_notify_errors_total", target="alertmanager") == 0
