"""The tracing layer without a backend: off means not imported; the names and the answer's summary."""

from __future__ import annotations

import subprocess
import sys

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
