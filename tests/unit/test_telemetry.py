"""The tracing layer without a backend: off means not imported; the names and the answer's summary."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from proxy.exchange import Exchange
from proxy.metrics import Metrics
from proxy.settings import OtelSettings, Settings


def test_off_by_default_and_nothing_of_it_imported() -> None:
    code = (
        "import sys\n"
        "from prometheus_client import CollectorRegistry\n"
        "from proxy.app import create_app\n"
        "from proxy.settings import Settings\n"
        "app = create_app(Settings(upstreams=[{'name': 'u', 'base_url': 'http://127.0.0.1:9/v1'}]),"
        " registry=CollectorRegistry())\n"
        "assert not app.state.tracing.enabled\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter',"
        " 'proxy.telemetry.otel', 'grpc'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"  # (FastAPI imports the opentelemetry API where it is installed)


def test_every_setting_of_it_has_a_variable() -> None:
    from proxy.settings import load_settings

    s = load_settings(
        environ={"REFUSAL_GUARD_OTEL__ENDPOINT": "http://127.0.0.1:4318", "REFUSAL_GUARD_OTEL__SAMPLE_RATIO": "0.25"}
    )
    assert s.otel.endpoint == "http://127.0.0.1:4318" and s.otel.sample_ratio == 0.25
    assert Settings().otel.endpoint is None


@pytest.mark.parametrize(("opt_in", "deprecated"), [("", True), ("http,gen_ai_latest_experimental", False)])
def test_semconv_stability_opt_in(monkeypatch: pytest.MonkeyPatch, opt_in: str, deprecated: bool) -> None:
    """The deprecated ``gen_ai.system`` is emitted beside ``gen_ai.provider.name`` unless the latest names are asked for."""
    from proxy.telemetry.otel import OtelTracing

    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", opt_in)
    tracing = OtelTracing(OtelSettings(endpoint="http://127.0.0.1:9"), Metrics(CollectorRegistry()))
    try:
        attrs = tracing._request_attributes("messages", "m", {"max_tokens": 5}, "u", False)
    finally:
        tracing.shutdown()
    assert attrs["gen_ai.provider.name"] == "anthropic" and attrs["gen_ai.request.max_tokens"] == 5
    assert ("gen_ai.system" in attrs) is deprecated


def test_the_answer_summary_of_an_anthropic_stream() -> None:
    from proxy.telemetry.otel import response_summary

    stream = (
        b'event: message_start\ndata: {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x",'
        b' "usage": {"input_tokens": 12, "output_tokens": 1}}}\n\n'
        b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}}\n\n'
        b'event: message_delta\ndata: {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}\n\n'
    )
    ex = Exchange(
        request_id="r", method="POST", path="/v1/messages", endpoint="messages", model="m", model_label="m",
        upstream="u", traffic="production", stream=True, status=200, started=0.0, duration=1.0, upstream_wait=1.0,
        response=stream,
    )  # fmt: skip
    assert response_summary(ex) == {
        "gen_ai.response.id": "msg_1",
        "gen_ai.response.model": "claude-x",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.response.finish_reasons": ("end_turn",),
    }


def in_memory(settings: OtelSettings, privacy: str = "full") -> tuple[Any, Any]:
    """An OtelTracing whose spans also land in memory (its OTLP exporter points nowhere)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from proxy.telemetry.otel import OtelTracing

    tracing = OtelTracing(settings, Metrics(CollectorRegistry()), privacy=privacy)
    memory = InMemorySpanExporter()
    tracing.provider.add_span_processor(SimpleSpanProcessor(memory))
    return tracing, memory


def traced_exchange(tracing: Any, content: str) -> None:
    from proxy.handoff import Call

    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    call = Call(request_id="r", path="chat/completions", method="POST", started_wall=1.0, model="m", request=body)
    tracing.begin(call, [("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01")])
    ex = Exchange(
        request_id="r", method="POST", path="/v1/chat/completions", endpoint="chat", model="m", model_label="m",
        upstream="u", traffic="production", stream=False, status=200, started=1.0, duration=0.5, upstream_wait=0.4,
        request=body, response=b'{"id": "c", "choices": [{"message": {"content": "the answer"}, "finish_reason": "stop"}]}',
        trace=call.trace,
    )  # fmt: skip
    tracing.finish(ex)


@pytest.mark.parametrize(
    ("capture", "privacy", "shown"), [(True, "full", True), (True, "redact", False), (False, "full", False)]
)
def test_content_only_when_asked_and_the_audit_keeps_it(capture: bool, privacy: str, shown: bool) -> None:
    tracing, memory = in_memory(OtelSettings(endpoint="http://127.0.0.1:9", capture_content=capture), privacy)
    try:
        traced_exchange(tracing, "a secret prompt")
        inference = next(s for s in memory.get_finished_spans() if s.name == "chat m")
        attrs = dict(inference.attributes or {})
        assert ("gen_ai.input.messages" in attrs) is shown and ("gen_ai.output.messages" in attrs) is shown
        assert inference.parent is not None and format(inference.context.trace_id, "032x") == "a" * 32
        assert inference.end_time == int(1.5e9)  # the last byte, not when the pipeline got to it
    finally:
        tracing.shutdown()


def test_a_transition_is_a_span_of_its_own() -> None:
    from proxy.canary.transition import Transition

    tracing, memory = in_memory(OtelSettings(endpoint="http://127.0.0.1:9"))
    try:
        tracing.transition(Transition("model_changed", "m", "tokenizer", 2.0, {"expected": 10.0, "observed": 14}))
        (span,) = memory.get_finished_spans()
        assert span.name == "drift model_changed" and span.parent is None
        assert span.attributes["refusal_guard.drift.suite"] == "tokenizer" and span.start_time == int(2e9)
    finally:
        tracing.shutdown()


def test_the_standard_endpoint_variable_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.app import build_tracing

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    tracing = build_tracing(Settings(), Metrics(CollectorRegistry()))
    try:
        assert tracing.enabled
    finally:
        tracing.shutdown()
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    assert not build_tracing(Settings(), Metrics(CollectorRegistry())).enabled
