"""Monitoring never breaks traffic: a failing or slow detector changes nothing the client sees."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import httpx

from detectors import Verdict
from proxy.testing import ServerThread
from tests.conftest import Proxy
from tests.upstreams import ANSWER, TestUpstream

MSGS = [{"role": "user", "content": "hi"}]


class RaisingDetector:
    name, version = "raising", "0"

    def classify(self, response: str, prompt: str | None = None) -> Verdict:
        raise RuntimeError("detector bug (on purpose)")

    def classify_batch(self, responses: Sequence[str], prompts: Sequence[str | None] | None = None) -> list[Verdict]:
        raise RuntimeError("detector bug (on purpose)")


class BlockedDetector:
    """Blocks until released: the classification queue fills up behind it."""

    name, version = "blocked", "0"

    def __init__(self) -> None:
        self.release = threading.Event()

    def classify(self, response: str, prompt: str | None = None) -> Verdict:
        self.release.wait(10)
        return Verdict.of("compliance", 0.0, self.name, self.version)

    def classify_batch(self, responses: Sequence[str], prompts: Sequence[str | None] | None = None) -> list[Verdict]:
        return [self.classify(r) for r in responses]


def upstream_settings(server: ServerThread, **extra: Any) -> dict[str, Any]:
    return {"upstreams": [{"name": "test", "base_url": server.url + "/v1"}], **extra}


def test_raising_detector_does_not_change_the_response(
    test_upstream: tuple[TestUpstream, ServerThread], start_proxy: Any
) -> None:
    """Responses are byte-identical with a raising detector; the failure is counted."""
    _, server = test_upstream
    p: Proxy = start_proxy(upstream_settings(server), detector=RaisingDetector())
    direct = httpx.post(server.url + "/v1/chat/completions", json={"model": "echo", "messages": MSGS})
    via = httpx.post(p.url + "/v1/chat/completions", json={"model": "echo", "messages": MSGS})
    assert via.status_code == 200 and via.content == direct.content
    assert via.json()["choices"][0]["message"]["content"] == ANSWER
    streamed = httpx.post(p.url + "/v1/chat/completions", json={"model": "echo", "messages": MSGS, "stream": True})
    assert streamed.status_code == 200 and b"[DONE]" in streamed.content
    assert p.wait_for(lambda: p.metric("refusal_guard_detector_errors_total") == 2)


def test_full_queue_sheds_classification_not_requests(
    test_upstream: tuple[TestUpstream, ServerThread], start_proxy: Any
) -> None:
    """With the detector stuck and a queue of one, every request still gets its 200; the rest is shed."""
    _, server = test_upstream
    detector = BlockedDetector()
    p: Proxy = start_proxy(upstream_settings(server, classify_queue_size=1, classify_batch_size=1), detector=detector)
    try:
        codes = [
            httpx.post(p.url + "/v1/chat/completions", json={"model": "echo", "messages": MSGS}).status_code
            for _ in range(6)
        ]
        assert codes == [200] * 6
        # one in the detector, one queued, the other four shed
        assert p.wait_for(lambda: p.metric("refusal_guard_classification_shed_total") == 4)
    finally:
        detector.release.set()
    # "echo" is in the upstream's own model list, so it is its own label
    assert p.wait_for(
        lambda: (
            p.metric(
                "refusal_guard_responses_total",
                model="echo",
                upstream="test",
                traffic="production",
                verdict="compliance",
            )
            == 2
        )
    )
