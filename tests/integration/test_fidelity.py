"""What the client sends reaches the upstream unchanged, and what the upstream answers reaches the client."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import structlog

from proxy.testing import ServerThread
from tests.conftest import Proxy
from tests.upstreams import TestUpstream

UPSTREAM_KEY = "sk-upstream-very-secret-0123456789"


def test_body_forwarded_byte_for_byte_with_unknown_fields(
    test_upstream: tuple[TestUpstream, ServerThread], test_proxy: Proxy
) -> None:
    """Unknown fields, key order and whitespace survive: the upstream gets the client's exact bytes."""
    up, _ = test_upstream
    raw = (
        b'{ "model": "echo",  "messages": [{"role": "user", "content": "hi"}], "x_vendor": {"a": [1, 2]}, "top_k": 5 }'
    )
    r = httpx.post(test_proxy.url + "/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert up.seen[-1]["body"] == raw


def test_response_status_body_and_headers_relayed(
    test_upstream: tuple[TestUpstream, ServerThread], test_proxy: Proxy
) -> None:
    """The upstream's body is relayed byte for byte, with its content and vendor headers."""
    _, server = test_upstream
    req = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    direct = httpx.post(server.url + "/v1/chat/completions", json=req)
    via = httpx.post(test_proxy.url + "/v1/chat/completions", json=req)
    assert via.content == direct.content
    assert via.headers["content-type"] == direct.headers["content-type"]
    assert via.headers["x-upstream"] == "yes" and via.headers["openai-processing-ms"] == "12"


def test_query_string_and_other_paths_pass_through(
    test_upstream: tuple[TestUpstream, ServerThread], test_proxy: Proxy
) -> None:
    """A pass-through path keeps its method, path and query string."""
    r = httpx.get(test_proxy.url + "/v1/files?purpose=batch&limit=2")
    assert r.status_code == 200 and r.json()["path"] == "/v1/files"
    assert r.headers["x-upstream"] == "yes"


def test_upstream_key_is_injected_and_client_credentials_are_not_forwarded(start_proxy: Any, monkeypatch: Any) -> None:
    """The upstream sees its own key, never the client's Authorization or cookies; responses never hold it."""
    monkeypatch.setenv("TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    up = TestUpstream()
    from proxy.testing import run_server

    with run_server(up.app) as server, structlog.testing.capture_logs() as logs:
        p = start_proxy(
            {"upstreams": [{"name": "t", "base_url": server.url + "/v1", "api_key_env": "TEST_UPSTREAM_KEY"}]}
        )
        r = httpx.post(
            p.url + "/v1/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": "Bearer sk-client-key", "cookie": "session=abc", "x-custom": "kept"},
        )
        assert r.status_code == 200
        seen = up.seen[-1]["headers"]
        assert seen["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert "cookie" not in seen and seen["x-custom"] == "kept"
        assert UPSTREAM_KEY not in r.text and UPSTREAM_KEY not in str(r.headers)
        assert UPSTREAM_KEY.encode() not in httpx.get(p.url + "/metrics").content
        httpx.get(p.url + "/readyz")
    assert UPSTREAM_KEY not in orjson.dumps(logs, default=str).decode()
    assert "sk-client-key" not in orjson.dumps(logs, default=str).decode()


def test_request_id_is_echoed_or_generated(test_proxy: Proxy) -> None:
    """A well-formed x-request-id comes back as sent; a missing or malformed one is replaced."""
    req = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(test_proxy.url + "/v1/chat/completions", json=req, headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = httpx.post(test_proxy.url + "/v1/chat/completions", json=req)
    assert len(r.headers["x-request-id"]) == 32
    r = httpx.post(test_proxy.url + "/v1/chat/completions", json=req, headers={"x-request-id": "a b\tc" * 50})
    assert " " not in r.headers["x-request-id"] and len(r.headers["x-request-id"]) == 32
    r = httpx.post(test_proxy.url + "/v1/chat/completions", content=b"{bad", headers={"x-request-id": "err-1"})
    assert r.status_code == 400 and r.headers["x-request-id"] == "err-1"


def test_one_log_line_per_request_without_content(test_proxy: Proxy) -> None:
    """Each request logs one info line with id, model, upstream, status, latency and verdict, and no text."""
    with structlog.testing.capture_logs() as logs:
        httpx.post(
            test_proxy.url + "/v1/chat/completions",
            headers={"x-request-id": "log-1"},
            json={"model": "echo", "messages": [{"role": "user", "content": "SECRET PROMPT TEXT"}]},
        )
        from proxy.testing import wait_for

        assert wait_for(lambda: any(e.get("request_id") == "log-1" for e in logs))
    lines = [e for e in logs if e.get("request_id") == "log-1"]
    assert len(lines) == 1
    line = lines[0]
    assert line["event"] == "request" and line["log_level"] == "info"
    assert {"model", "upstream", "status", "latency_ms", "verdict"} <= set(line)
    assert line["status"] == 200 and line["verdict"] == "compliance"
    dumped = orjson.dumps(logs, default=str).decode()
    assert "SECRET PROMPT TEXT" not in dumped and "Here is the answer" not in dumped


def test_healthz_and_readyz(test_proxy: Proxy) -> None:
    """/healthz answers while up; /readyz reports each upstream."""
    assert httpx.get(test_proxy.url + "/healthz").json() == {"status": "ok"}
    r = httpx.get(test_proxy.url + "/readyz")
    assert r.status_code == 200 and r.json()["upstreams"] == {"test": True}
