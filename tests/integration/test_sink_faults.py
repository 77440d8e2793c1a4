"""Faults beside the request path: a full disk under the audit log, a broken metrics registry, a
canary upstream that fails. Traffic flows; the fault shows in metrics and logs.

(The detector raising or hanging, and the audit sink going read-only or away, are in
test_pipeline.py and test_audit.py.)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.testing import ServerThread
from tests.conftest import Proxy
from tests.upstreams import TestUpstream

MSGS = [{"role": "user", "content": "hi"}]
FULL = Path("/dev/full")  # every write fails with ENOSPC: a disk that is full


def ask(p: Proxy, n: int, model: str = "echo") -> list[int]:
    with httpx.Client(base_url=p.url) as c:
        return [c.post("/v1/chat/completions", json={"model": model, "messages": MSGS}).status_code for _ in range(n)]


@pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full")
def test_full_disk_under_the_audit_log_spools_and_traffic_flows(
    test_upstream: tuple[TestUpstream, ServerThread], start_proxy: Any, tmp_path: Path
) -> None:
    _, server = test_upstream
    spool = tmp_path / "spool.jsonl"
    p: Proxy = start_proxy(
        {
            "upstreams": [{"name": "t", "base_url": server.url + "/v1"}],
            "audit": {"url": f"jsonl://{FULL}", "spool_path": str(spool), "flush_seconds": 0.05, "retry_seconds": 60},
        }
    )
    assert ask(p, 20) == [200] * 20
    assert p.wait_for(lambda: p.metric("refusal_guard_audit_spooled_total") == 20)
    assert p.metric("refusal_guard_audit_write_errors_total") >= 1
    assert p.metric("refusal_guard_audit_dropped_total") == 0
    assert len(spool.read_bytes().splitlines()) == 20  # kept, in order, for replay


@pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full")
def test_sink_full_and_spool_unwritable_drops_are_counted_and_traffic_flows(
    test_upstream: tuple[TestUpstream, ServerThread], start_proxy: Any
) -> None:
    _, server = test_upstream
    p: Proxy = start_proxy(
        {
            "upstreams": [{"name": "t", "base_url": server.url + "/v1"}],
            "audit": {"url": f"jsonl://{FULL}", "spool_path": str(FULL / "spool.jsonl"), "flush_seconds": 0.05},
        }
    )
    assert ask(p, 10) == [200] * 10
    assert p.wait_for(lambda: p.metric("refusal_guard_audit_dropped_total") == 10)


def test_a_broken_metrics_registry_never_fails_a_request(
    test_upstream: tuple[TestUpstream, ServerThread], start_proxy: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _, server = test_upstream
    p: Proxy = start_proxy({"upstreams": [{"name": "t", "base_url": server.url + "/v1"}]})

    class Broken:
        def labels(self, *_: Any) -> Any:
            raise RuntimeError("registry is broken")

    p.app.state.metrics.requests = Broken()
    p.app.state.metrics.responses = Broken()
    with caplog.at_level(logging.ERROR):
        assert ask(p, 5) == [200] * 5
        streamed = httpx.post(p.url + "/v1/chat/completions", json={"model": "echo", "messages": MSGS, "stream": True})
    assert streamed.status_code == 200 and b"[DONE]" in streamed.content


def test_a_failing_canary_upstream_is_counted_not_drift_and_traffic_flows(
    test_upstream: tuple[TestUpstream, ServerThread], start_proxy: Any
) -> None:
    """Canaries to a model whose upstream answers 503: canary errors, no verdicts, no drift, no quarantine."""
    _, server = test_upstream
    p: Proxy = start_proxy(
        {
            "upstreams": [{"name": "t", "base_url": server.url + "/v1", "models": ["status-503", "echo"]}],
            "canary": {
                "enabled": True,
                "interval_seconds": 0.02,
                "per_round": 2,
                "models": ["status-503"],
                "policies": {"status-503": {"action": "quarantine"}},
            },
        }
    )
    assert p.wait_for(lambda: p.metric("refusal_guard_canary_errors_total", model="status-503", suite="harmful") >= 20)
    assert p.metric("refusal_guard_drift_state", model="status-503", suite="harmful") == 0
    assert p.metric("refusal_guard_quarantined", model="status-503") == 0
    assert ask(p, 5) == [200] * 5
