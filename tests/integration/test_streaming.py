"""Streams are relayed as they arrive, cancelled with the client, and cut cleanly when the upstream dies."""

from __future__ import annotations

import httpx
import openai
import pytest

from proxy.testing import ServerThread
from tests.conftest import Proxy
from tests.upstreams import TestUpstream


def stream_request(model: str) -> dict[str, object]:
    return {"model": model, "stream": True, "messages": [{"role": "user", "content": "go"}]}


def test_first_chunk_arrives_before_upstream_sends_the_last(
    test_upstream: tuple[TestUpstream, ServerThread], test_proxy: Proxy
) -> None:
    """The upstream holds its last chunk until the client has the first: a buffering proxy would deadlock."""
    up, _ = test_upstream
    client = test_proxy.client()
    stream = client.chat.completions.create(**stream_request("gated"))  # type: ignore[call-overload]
    first = next(iter(stream))
    assert first.choices[0].delta.content == "first "
    assert not up.gate.is_set()
    up.gate.set()
    rest = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert rest == "last"


def test_client_disconnect_cancels_the_upstream_request(
    test_upstream: tuple[TestUpstream, ServerThread], test_proxy: Proxy
) -> None:
    """Closing the client's stream mid-way closes the proxy's upstream request too."""
    up, _ = test_upstream
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", test_proxy.url + "/v1/chat/completions", json=stream_request("endless")) as r,
    ):
        it = r.iter_raw()
        assert b"more" in next(it)
    assert up.cancelled.wait(5), "upstream stream was not cancelled after the client left"
    assert httpx.get(test_proxy.url + "/healthz").status_code == 200


def test_upstream_dying_mid_stream_ends_the_stream_with_an_error_event(test_proxy: Proxy) -> None:
    """The client gets the chunks sent so far, then an OpenAI error event (the SDK raises APIError)."""
    got: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for c in test_proxy.client().chat.completions.create(**stream_request("die")):  # type: ignore[call-overload]
            got.extend(ch.delta.content or "" for ch in c.choices)
    assert "".join(got) == "partial answer "
    assert "broke off" in str(info.value.message)
    assert test_proxy.wait_for(
        lambda: (
            test_proxy.metric("refusal_guard_upstream_errors_total", upstream="test", kind="stream_interrupted") == 1
        )
    )
    # the partial answer is still classified
    assert test_proxy.wait_for(
        lambda: (
            test_proxy.metric(
                "refusal_guard_responses_total", model="*", upstream="test", traffic="production", verdict="compliance"
            )
            == 1
        )
    )
    assert httpx.get(test_proxy.url + "/healthz").status_code == 200


def test_stream_request_answered_with_an_error_is_relayed_as_json(test_proxy: Proxy) -> None:
    """A stream request the upstream rejects gets the upstream's JSON error, not an SSE stream."""
    r = httpx.post(test_proxy.url + "/v1/chat/completions", json=stream_request("status-429"))
    assert r.status_code == 429 and r.json()["error"]["message"] == "upstream says 429"
    assert test_proxy.metric("refusal_guard_upstream_errors_total", upstream="test", kind="status_4xx") == 1
