"""Hostile input never gets a 500 or a hang: random JSON, broken bytes and odd headers against a live proxy."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.testing import ServerThread

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
chat_like = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.just("sim-model"), st.text(max_size=30), st.integers(-(2**63), 2**63 - 1), st.none()),
        "messages": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {}, optional={"role": st.sampled_from(["user", "system", 5]), "content": json_values}
                ),
                max_size=3,
            ),
            json_values,
        ),
        "stream": st.one_of(st.booleans(), json_values),
        "max_tokens": json_values,
        "temperature": json_values,
    },
)
PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings"]


@pytest.fixture(scope="module")
def fuzz_proxy(sim: ServerThread) -> Any:
    from prometheus_client import CollectorRegistry

    from proxy.app import create_app
    from proxy.settings import Settings
    from proxy.testing import ServerThread as Server

    app = create_app(
        Settings.model_validate(
            {
                "upstreams": [{"name": "sim", "base_url": sim.url + "/v1", "models": ["sim-model"]}],
                "canary": {"enabled": False},
                "audit": {"enabled": False},
                "max_body_bytes": 65536,
            }
        ),
        registry=CollectorRegistry(),
    )
    server = Server(app).start()
    client = httpx.Client(base_url=server.url, timeout=10)
    yield client
    client.close()
    server.stop()


def check(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}


@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=chat_like, path=st.sampled_from(PATHS))
def test_random_json_bodies(fuzz_proxy: httpx.Client, body: dict[str, Any], path: str) -> None:
    """Well-formed JSON of the wrong shapes gets a 2xx relay or an OpenAI 4xx, never a 5xx."""
    check(fuzz_proxy.post(path, content=orjson.dumps(body), headers={"content-type": "application/json"}))


@settings(
    max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    raw=st.binary(max_size=300),
    path=st.sampled_from(PATHS),
    content_type=st.sampled_from(["application/json", "text/plain", "multipart/form-data; boundary=x", ""]),
)
def test_random_bytes(fuzz_proxy: httpx.Client, raw: bytes, path: str, content_type: str) -> None:
    """Arbitrary bytes (invalid UTF-8 included) under any content type: a clear 4xx or a relay."""
    check(fuzz_proxy.post(path, content=raw, headers={"content-type": content_type} if content_type else {}))


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200),
    name=st.sampled_from(["x-request-id", "authorization", "content-length", "api-key", "x-custom"]),
)
def test_odd_headers(fuzz_proxy: httpx.Client, value: str, name: str) -> None:
    """Odd header values never break the proxy, and a bad x-request-id is never echoed back."""
    body = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]}
    try:
        r = fuzz_proxy.post("/v1/chat/completions", json=body, headers={name: value})
    except httpx.HTTPError:
        return  # the client refused to send it (e.g. a content-length it cannot honour)
    check(r)
    if name == "x-request-id" and (not value or len(value) > 128 or any(c in value for c in " \"'<>;")):
        assert r.headers["x-request-id"] != value


def test_deeply_nested_and_huge_json(fuzz_proxy: httpx.Client) -> None:
    """Deep nesting and bodies over the limit are refused cleanly; the proxy stays up."""
    deep = b'{"model": "sim-model", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    check(fuzz_proxy.post("/v1/chat/completions", content=deep, headers={"content-type": "application/json"}))
    big = b'{"model": "sim-model", "x": "' + b"a" * 200_000 + b'"}'
    r = fuzz_proxy.post("/v1/chat/completions", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    huge_int = (
        b'{"model": "sim-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1' + b"0" * 40 + b"}"
    )
    r = fuzz_proxy.post("/v1/chat/completions", content=huge_int, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    assert fuzz_proxy.get("/healthz").status_code == 200
