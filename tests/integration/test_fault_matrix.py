"""Upstream fault matrix: each fault from a real local server that misbehaves on purpose (tests/faulty.py).

For every fault: what the client gets, the metric that moves, the audit record written, and a
healthy proxy afterwards.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from proxy.app import create_app
from proxy.audit.sinks import open_sink
from proxy.audit.storage import Query
from proxy.settings import Settings
from proxy.testing import ServerThread, free_port, wait_for
from tests.conftest import Proxy
from tests.faulty import OK_BODY, blackhole, drop_reused, faulty_upstream

SHORT = {"connect": 0.5, "read": 1.0, "write": 1.0, "pool": 0.5}


@dataclass
class World:
    proxy: Proxy
    audit_url: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    audit_url = f"sqlite:///{tmp_path_factory.mktemp('faults') / 'audit.db'}"
    with faulty_upstream() as faulty, blackhole() as hole:
        settings = Settings.model_validate(
            {
                "max_response_bytes": 1024 * 1024,
                "canary": {"enabled": False},
                "audit": {"url": audit_url, "flush_seconds": 0.05},
                "upstreams": [
                    {"name": "refused", "base_url": f"http://127.0.0.1:{free_port()}/v1", "models": ["refused"]},
                    {"name": "dns", "base_url": "http://nonexistent.invalid/v1", "models": ["dns"]},
                    {"name": "blackhole", "base_url": hole, "models": ["blackhole"], "timeouts": SHORT},
                    {"name": "faulty", "base_url": faulty, "models": ["*"], "timeouts": SHORT},
                ],
            }
        )
        registry = CollectorRegistry()
        server = ServerThread(create_app(settings, registry=registry)).start()
        try:
            yield World(Proxy(server, registry, None), audit_url)
        finally:
            server.stop()


def record(audit_url: str, request_id: str) -> dict[str, Any] | None:
    sink = open_sink(audit_url)
    try:
        found = list(sink.read(Query(request_id=request_id)))
    except sqlite3.OperationalError:  # the writer has not created the table yet
        return None
    finally:
        sink.close()
    return found[0] if found else None


@dataclass(frozen=True)
class Case:
    model: str
    status: int
    code: str | None = None  # the proxy's error code; None: the upstream's answer relayed
    kind: str | None = None  # refusal_guard_upstream_errors_total{kind}
    upstream: str = "faulty"
    stream: bool = False
    unparseable: bool = False


CASES = [
    Case("refused", 502, "upstream_unreachable", "connect", upstream="refused"),
    Case("dns", 502, "upstream_unreachable", "connect", upstream="dns"),
    Case("blackhole", 504, "upstream_timeout", "timeout", upstream="blackhole"),
    Case("silent", 504, "upstream_timeout", "timeout"),
    Case("close-at-once", 502, "upstream_unreachable", "connect"),
    Case("status-429-json", 429, kind="status_4xx"),
    Case("status-429-empty", 429, kind="status_4xx"),
    Case("status-503-json", 503, kind="status_5xx"),
    Case("status-500-empty", 500, kind="status_5xx"),
    Case("non-json", 200, unparseable=True),
    Case("trickle", 200),
    Case("trickle-stall", 504, "upstream_timeout", "timeout"),
    Case("truncated-json", 502, "upstream_unreachable", "read"),
    Case("oversized", 502, "upstream_response_too_large", "protocol"),
    Case("sse-cut", 200, "upstream_stream_interrupted", "stream_interrupted", stream=True),
    Case("sse-malformed", 200, stream=True, unparseable=True),
    Case("sse-endless", 200, "upstream_stream_interrupted", "timeout", stream=True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.model for c in CASES])
def test_fault(world: World, case: Case) -> None:
    p = world.proxy
    errors = ("refusal_guard_upstream_errors_total", {"upstream": case.upstream, "kind": case.kind or "none"})
    before = p.metric(errors[0], **errors[1])
    unparseable_before = p.metric("refusal_guard_unparseable_responses_total", upstream=case.upstream)
    rid = "fault-" + uuid.uuid4().hex
    body = {"model": case.model, "messages": [{"role": "user", "content": "hi"}], "stream": case.stream}
    r = httpx.post(p.url + "/v1/chat/completions", json=body, headers={"x-request-id": rid}, timeout=30)

    # the client's answer
    assert r.status_code == case.status, r.text
    if case.stream:
        assert r.headers["content-type"].startswith("text/event-stream")
        if case.code:  # what arrived before the fault, then an error event the SDKs raise on
            assert b'"content":"Hello"' in r.content
            assert r.content.rstrip().endswith(b"}") and f'"code":"{case.code}"'.encode() in r.content
        else:
            assert b"data: {not json" in r.content and r.content.endswith(b"data: [DONE]\n\n")
    elif case.code:
        error = r.json()["error"]
        assert error["code"] == case.code and error["type"] and error["message"]
    elif case.model == "trickle":
        assert r.content == OK_BODY
    elif case.model == "non-json":
        assert r.content == b"<html>upstream proxy error page</html>"  # relayed as it came
    # the metric
    if case.kind:  # counted once the relay finished, which may be just after the client read the last byte
        assert p.wait_for(lambda: p.metric(errors[0], **errors[1]) == before + 1)
    if case.unparseable:
        assert p.wait_for(
            lambda: (
                p.metric("refusal_guard_unparseable_responses_total", upstream=case.upstream) == unparseable_before + 1
            )
        )
    # the audit record
    assert wait_for(lambda: record(world.audit_url, rid) is not None), "no audit record"
    rec = record(world.audit_url, rid)
    assert rec is not None and rec["status"] == case.status and rec["upstream"] == case.upstream
    if case.code:
        assert rec["error"], rec
    # and the proxy is still healthy
    assert httpx.get(p.url + "/healthz").status_code == 200
    ok = {"model": "anything-else", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(p.url + "/v1/chat/completions", json=ok).content == OK_BODY


def test_every_fault_left_no_task_or_connection_behind(world: World) -> None:
    """After the whole matrix, the proxy still answers a burst of normal requests at once."""
    ok = {"model": "anything-else", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=world.proxy.url) as c:
        assert all(c.post("/v1/chat/completions", json=ok).status_code == 200 for _ in range(50))


def test_a_pooled_connection_closed_by_the_upstream_is_retried_once_on_a_fresh_one() -> None:
    """The second request reuses the first one's connection, which the upstream closes unanswered;
    the client still gets the answer, and the retry is counted."""
    with faulty_upstream(drop_reused) as url:
        settings = Settings.model_validate(
            {"canary": {"enabled": False}, "audit": {"url": "jsonl://-"}, "upstreams": [{"name": "u", "base_url": url}]}
        )
        registry = CollectorRegistry()
        server = ServerThread(create_app(settings, registry=registry)).start()
        try:
            p = Proxy(server, registry, None)
            ok = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            with httpx.Client(base_url=p.url) as c:
                answers = [c.post("/v1/chat/completions", json=ok) for _ in range(3)]
            assert [r.content for r in answers] == [OK_BODY] * 3
            # each met the connection its predecessor left in the pool (the first, the one of the
            # startup's GET /models, by which the router learns what a "*" upstream serves)
            assert p.metric("refusal_guard_upstream_retries_total", upstream="u") == 3
            assert p.metric("refusal_guard_upstream_errors_total", upstream="u", kind="connect") == 0
        finally:
            server.stop()
