"""Every error the proxy itself answers comes in OpenAI's envelope with the right status; never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from proxy.settings import ClientKey
from proxy.testing import ServerThread, run_server
from tests.conftest import Proxy
from tests.upstreams import TestUpstream

MSGS = [{"role": "user", "content": "hi"}]


def envelope(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"", None),
        (b"[1, 2]", None),
        (b'{"messages": []}', "model"),
        (b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "sim-model", "messages": "hi"}', "messages"),
        (b'{"model": "sim-model", "messages": [{"content": "x"}]}', "messages[0]"),
        (b'{"model": "sim-model", "messages": [{"role": "user", "content": 5}]}', "messages[0].content"),
        (b'{"model": "sim-model", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
        (b'{"model": "sim-model", "messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}', "max_tokens"),
        (b'{"model": "sim-model", "messages": [{"role": "user", "content": "x"}], "temperature": true}', "temperature"),
        (b'\xff\xfe{"model"', None),
    ],
)
def test_bad_bodies_are_400(sim_proxy: Proxy, body: bytes, param: str | None) -> None:
    """Malformed JSON and wrong types get a 400 invalid_request_error naming the parameter."""
    r = httpx.post(sim_proxy.url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    err = envelope(r)
    assert err["type"] == "invalid_request_error" and err["param"] == param


def test_bad_completions_and_responses_bodies_are_400(sim_proxy: Proxy) -> None:
    """Each classified endpoint checks its own required field."""
    r = httpx.post(sim_proxy.url + "/v1/completions", json={"model": "sim-model", "prompt": {"a": 1}})
    assert r.status_code == 400 and envelope(r)["param"] == "prompt"
    r = httpx.post(sim_proxy.url + "/v1/responses", json={"model": "sim-model", "input": 3})
    assert r.status_code == 400 and envelope(r)["param"] == "input"


def test_body_over_limit_is_413(sim: ServerThread, start_proxy: Any) -> None:
    """A body over ``max_body_bytes`` is refused with 413, declared or streamed without a length."""
    p = start_proxy({"max_body_bytes": 1000, "upstreams": [{"name": "sim", "base_url": sim.url + "/v1"}]})
    big = [{"role": "user", "content": "x" * 2000}]
    with pytest.raises(openai.APIStatusError) as info:
        p.client().chat.completions.create(model="sim-model", messages=big)
    assert info.value.status_code == 413 and info.value.code == "request_too_large"

    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"model": "sim-model", "messages": [{"role": "user", "content": "'
        yield b"y" * 5000
        yield b'"}]}'

    r = httpx.post(p.url + "/v1/chat/completions", content=chunks())
    assert r.status_code == 413 and envelope(r)["code"] == "request_too_large"


def test_unknown_model_is_404_model_not_found(sim_proxy: Proxy) -> None:
    """A model no upstream serves is a 404 with code model_not_found, and never becomes a metric label."""
    with pytest.raises(openai.NotFoundError) as info:
        sim_proxy.client().chat.completions.create(model="no-such-model", messages=MSGS)
    assert info.value.code == "model_not_found"
    assert sim_proxy.wait_for(
        lambda: sim_proxy.metric("refusal_guard_requests_total", model="unrouted", upstream="none", code="404") == 1
    )
    assert b"no-such-model" not in httpx.get(sim_proxy.url + "/metrics").content


def test_upstream_unreachable_is_502(start_proxy: Any) -> None:
    """Connection refused upstream: 502 upstream_unreachable, counted as a connect error."""
    with run_server(TestUpstream().app) as dead:
        url = dead.url
    p = start_proxy({"upstreams": [{"name": "gone", "base_url": url + "/v1"}]})
    with pytest.raises(openai.APIStatusError) as info:
        p.client().chat.completions.create(model="m", messages=MSGS)
    assert info.value.status_code == 502 and info.value.code == "upstream_unreachable"
    assert p.metric("refusal_guard_upstream_errors_total", upstream="gone", kind="connect") == 1
    assert httpx.get(p.url + "/readyz").status_code == 503


def test_upstream_timeout_is_504(test_proxy: Proxy) -> None:
    """An upstream slower than the read timeout: 504 upstream_timeout."""
    with pytest.raises(openai.APIStatusError) as info:
        test_proxy.client().chat.completions.create(model="slow", messages=MSGS)
    assert info.value.status_code == 504 and info.value.code == "upstream_timeout"
    assert test_proxy.metric("refusal_guard_upstream_errors_total", upstream="test", kind="timeout") == 1


@pytest.mark.parametrize("code", [400, 404, 422, 429, 500, 503])
def test_upstream_errors_pass_through_unchanged(test_proxy: Proxy, code: int) -> None:
    """Upstream 4xx/5xx reach the client as they are: status, body and headers."""
    r = httpx.post(test_proxy.url + "/v1/chat/completions", json={"model": f"status-{code}", "messages": MSGS})
    assert r.status_code == code
    assert r.json() == {"error": {"message": f"upstream says {code}", "type": "x", "param": None, "code": None}}
    assert r.headers["retry-after"] == "7"


def test_client_keys(sim: ServerThread, start_proxy: Any) -> None:
    """With client keys configured: 401 without or with a wrong key, 200 with a right one; never forwarded."""
    up = TestUpstream()
    with run_server(up.app) as server:
        p = start_proxy(
            {
                "client_keys": [{"id": "team-a", "sha256": ClientKey.digest("sk-client-secret")}],
                "upstreams": [{"name": "t", "base_url": server.url + "/v1"}],
            }
        )
        for key in ("", "sk-wrong"):
            r = httpx.post(
                p.url + "/v1/chat/completions",
                json={"model": "echo", "messages": MSGS},
                headers={"authorization": f"Bearer {key}"} if key else {},
            )
            assert r.status_code == 401 and envelope(r)["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            p.client(api_key="sk-wrong").models.list()
        out = p.client(api_key="sk-client-secret").chat.completions.create(model="echo", messages=MSGS)
        assert out.choices[0].message.content
        assert all("sk-client-secret" not in str(s["headers"]) for s in up.seen)


def test_method_and_path_errors_use_the_envelope(sim_proxy: Proxy) -> None:
    """Wrong method is 405 with the ``Allow`` header RFC 9110 requires, unknown path 404, both in
    OpenAI's envelope."""
    r = httpx.get(sim_proxy.url + "/v1/chat/completions")
    assert r.status_code == 405 and envelope(r)["code"] == "method_not_allowed"
    assert r.headers["allow"] == "POST"
    for path, allow in (("/healthz", "GET, HEAD"), ("/admin/quarantine/sim-model", "POST")):
        r = httpx.delete(sim_proxy.url + path)
        assert r.status_code == 405 and r.headers["allow"] == allow
    r = httpx.get(sim_proxy.url + "/nope")
    assert r.status_code == 404 and envelope(r)["code"] == "not_found"
