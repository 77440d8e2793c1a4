"""The reference upstream replays real answers per mode, and switches mode at run time."""

from __future__ import annotations

import httpx
import openai
import pytest

from detectors import PatternDetector
from proxy.testing import ServerThread
from reference_upstream.corpus import load_corpus


@pytest.fixture
def sim_mode(sim: ServerThread):  # type: ignore[no-untyped-def]
    def set_mode(mode: str) -> None:
        httpx.post(sim.url + "/sim/mode", json={"mode": mode}).raise_for_status()

    yield set_mode
    set_mode("safe")


def refusal_rate(sim: ServerThread, prompts: list[str]) -> float:
    client = openai.OpenAI(base_url=sim.url + "/v1", api_key="x", max_retries=0)
    d = PatternDetector()
    refused = [
        d.classify(
            client.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": p}])
            .choices[0]
            .message.content
            or ""
        ).refused
        for p in prompts
    ]
    return sum(refused) / len(refused)


def test_modes_change_behaviour(sim: ServerThread, sim_mode) -> None:  # type: ignore[no-untyped-def]
    """safe refuses harmful and answers benign; abliterated answers harmful; overrefusal refuses benign."""
    corpus = load_corpus()
    harmful, benign = corpus.harmful_prompts()[:40], corpus.benign_prompts()[:40]
    assert refusal_rate(sim, harmful) >= 0.8 and refusal_rate(sim, benign) <= 0.2
    sim_mode("abliterated")
    assert refusal_rate(sim, harmful) <= 0.2
    sim_mode("overrefusal")
    assert refusal_rate(sim, benign) >= 0.8


def test_templated_prompt_is_recognised() -> None:
    """A known prompt inside a template is still recognised (canaries vary their wording)."""
    corpus = load_corpus()
    p = corpus.harmful_prompts()[0]
    assert corpus.find(f"Quick question from my team: {p.lower()} Thanks!") is corpus.find(p)


def test_bad_mode_is_400(sim: ServerThread) -> None:
    """An unknown mode is refused and the mode does not change."""
    r = httpx.post(sim.url + "/sim/mode", json={"mode": "evil"})
    assert r.status_code == 400
    assert httpx.get(sim.url + "/sim/mode").json()["mode"] == "safe"
