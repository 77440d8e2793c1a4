"""The proxy in front of llama.cpp's own server (the C++ ``llama-server``) with a real model, driven
by the official openai and anthropic SDKs: what a real inference server sends (its framing, ``usage``
chunks, ``timings``, its own error bodies) passes through unchanged and is classified; a client that
hangs up stops the generation; canaries and the pre-deploy gate run against it; the quick path
(``refusal-guard serve --upstream URL``) watches the model name the client uses.

Gemma 3 270M is a base model: it does not refuse, and its answers are short nonsense. That is all
these tests need: they are about the protocol, not the model's manners. Greedy decoding
(``temperature: 0``) makes an answer repeatable, so a relayed one can be compared with a direct one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from proxy.server import free_port, wait_http
from proxy.testing import audit_records
from tests.conftest import Proxy

PROMPT = [{"role": "user", "content": "Write one sentence about the sea."}]
GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 12}


@pytest.fixture
def proxy(llamacpp: str, start_proxy: Any) -> Proxy:
    # llama.cpp lists its model as a file path and answers any name: the catalog learns the client's
    p: Proxy = start_proxy(
        {
            "upstreams": [{"name": "llamacpp", "base_url": llamacpp + "/v1", "models": ["*"]}],
            "learn_model_after": 1,
        }
    )
    return p


def direct(llamacpp: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=llamacpp + "/v1", api_key="unused", max_retries=0, timeout=60)


def answered(p: Proxy, model: str = "gemma", traffic: str = "production") -> float:
    labels = {"model": model, "upstream": "llamacpp", "traffic": traffic}
    return sum(p.metric("refusal_guard_responses_total", **labels, verdict=v) for v in ("refusal", "compliance"))


def slots_busy(llamacpp: str) -> bool:
    return any(s.get("is_processing") for s in httpx.get(llamacpp + "/slots", timeout=5).json())


def predicted(llamacpp: str) -> float:
    """llama.cpp's own count of tokens it generated (its Prometheus endpoint)."""
    for line in httpx.get(llamacpp + "/metrics", timeout=5).text.splitlines():
        if line.startswith("llamacpp:tokens_predicted_total"):
            return float(line.split()[-1])
    raise AssertionError("llama.cpp exported no tokens_predicted_total")


def test_chat_non_stream_is_relayed_with_its_extra_fields(llamacpp: str, proxy: Proxy) -> None:
    """The same greedy answer as a direct call; llama.cpp's own fields (``timings``) reach the client;
    the answer is classified under the name the client used."""
    via = proxy.client(timeout=60).chat.completions.create(model="gemma", messages=PROMPT, **GREEDY)  # type: ignore[arg-type]
    ref = direct(llamacpp).chat.completions.create(model="gemma", messages=PROMPT, **GREEDY)  # type: ignore[arg-type]
    assert via.choices[0].message.content == ref.choices[0].message.content
    assert via.model_extra and "timings" in via.model_extra and via.usage and via.usage.completion_tokens > 0
    assert proxy.wait_for(lambda: answered(proxy) == 1)


def test_chat_stream_with_usage_and_n(llamacpp: str, proxy: Proxy) -> None:
    """Streamed: the chunks join to the non-streamed greedy answer, the usage chunk comes last
    (``stream_options.include_usage``), and ``n=2`` gives two choices, each judged."""
    client = proxy.client(timeout=60)
    chunks = list(
        client.chat.completions.create(
            model="gemma", messages=PROMPT, stream=True, stream_options={"include_usage": True}, **GREEDY
        )  # type: ignore[call-overload]
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    ref = direct(llamacpp).chat.completions.create(model="gemma", messages=PROMPT, **GREEDY)  # type: ignore[arg-type]
    assert text == ref.choices[0].message.content
    assert chunks[-1].usage is not None and not chunks[-1].choices
    two = client.chat.completions.create(model="gemma", messages=PROMPT, n=2, **GREEDY)  # type: ignore[arg-type]
    assert [c.index for c in two.choices] == [0, 1]
    assert proxy.wait_for(lambda: answered(proxy) == 3)  # one for the stream, two for the choices


def test_completions_and_models(llamacpp: str, proxy: Proxy) -> None:
    """Legacy completions, streamed and not, give the same greedy text; ``/v1/models`` lists llama.cpp's
    model as llama.cpp does, every field of it (its id is a file path)."""
    client = proxy.client(timeout=60)
    once = client.completions.create(model="gemma", prompt="The capital of France is", **GREEDY)
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model="gemma", prompt="The capital of France is", stream=True, **GREEDY)
        if c.choices
    )
    assert once.choices[0].text == streamed and streamed
    models = httpx.get(proxy.url + "/v1/models", timeout=10).json()
    assert models["data"] == httpx.get(llamacpp + "/v1/models", timeout=10).json()["data"]
    assert models["data"][0]["id"].endswith(".gguf") and "meta" in models["data"][0]
    assert proxy.wait_for(lambda: answered(proxy) == 2)


def test_upstream_error_bodies_pass_through_unchanged(llamacpp: str, proxy: Proxy) -> None:
    """What llama.cpp rejects (here ``n=0``, a 400, and a non-array ``tools``, a 500 of its own) reaches
    the client byte for byte, with its status."""
    for extra in ({"n": 0}, {"tools": "x"}):
        body = {"model": "gemma", "messages": PROMPT, "max_tokens": 4, **extra}
        via = httpx.post(proxy.url + "/v1/chat/completions", json=body, timeout=30)
        ref = httpx.post(llamacpp + "/v1/chat/completions", json=body, timeout=30)
        assert (via.status_code, via.content) == (ref.status_code, ref.content)
        assert via.status_code >= 400 and "error" in via.json()


def test_a_client_that_hangs_up_stops_the_generation(llamacpp: str, proxy: Proxy) -> None:
    """A streamed request for 600 tokens, dropped after a few chunks: llama.cpp's slot is free again at
    once and generated far fewer than 600 tokens (it would take ~15-20 s to finish here)."""
    assert proxy.wait_for(lambda: not slots_busy(llamacpp), timeout=30)
    before = predicted(llamacpp)
    body = {"model": "gemma", "messages": PROMPT, "max_tokens": 600, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", proxy.url + "/v1/chat/completions", json=body, timeout=30) as r:
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
    assert proxy.wait_for(lambda: not slots_busy(llamacpp), timeout=5)
    time.sleep(0.5)
    assert predicted(llamacpp) - before < 200
    assert proxy.wait_for(lambda: answered(proxy) == 1)  # what the client got before it left is judged


def test_anthropic_messages_against_llamacpp(llamacpp: str, proxy: Proxy) -> None:
    """llama.cpp serves Anthropic's Messages API too: the anthropic SDK gets the same greedy text as
    directly, streamed and not, and both are classified."""
    c = anthropic.Anthropic(base_url=proxy.url, api_key="unused", max_retries=0, timeout=60)
    ref = anthropic.Anthropic(base_url=llamacpp, api_key="unused", max_retries=0, timeout=60)
    ask: dict[str, Any] = {"model": "gemma", "messages": PROMPT, "max_tokens": 12, "extra_body": {"temperature": 0}}
    once = c.messages.create(**ask)
    assert once.content[0].text == ref.messages.create(**ask).content[0].text  # type: ignore[union-attr]
    with c.messages.stream(**ask) as stream:
        assert "".join(stream.text_stream) == once.content[0].text  # type: ignore[union-attr]
    assert proxy.wait_for(lambda: answered(proxy) == 2)


def test_audit_records_are_complete(llamacpp: str, start_proxy: Any, tmp_path: Path) -> None:
    """Each exchange with llama.cpp has its record: request, the answer (a stream reassembled), the
    verdict, the client's model name, and the chain verifies."""
    url = f"sqlite:///{tmp_path}/audit.db"
    p: Proxy = start_proxy(
        {
            "upstreams": [{"name": "llamacpp", "base_url": llamacpp + "/v1", "models": ["*"]}],
            "audit": {"enabled": True, "url": url, "flush_seconds": 0.05},
        }
    )
    client = p.client(timeout=60)
    once = client.chat.completions.create(model="gemma", messages=PROMPT, **GREEDY)  # type: ignore[arg-type]
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="gemma", messages=PROMPT, stream=True, **GREEDY)  # type: ignore[call-overload]
        if c.choices
    )

    assert p.wait_for(lambda: len(audit_records(url)) == 2)
    plain, streamed = audit_records(url)
    assert plain["response"]["choices"][0]["message"]["content"] == once.choices[0].message.content
    assert streamed["stream"] is True and streamed["response"]["choices"][0]["text"] == text
    for r in (plain, streamed):
        assert r["model"] == "gemma" and r["upstream"] == "llamacpp" and r["status"] == 200
        assert r["request"]["messages"] == PROMPT and r["verdict"] in ("refusal", "compliance")
    verify = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "audit", "verify", "--audit", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_the_gate_fails_a_model_that_does_not_refuse(llamacpp: str, tmp_path: Path) -> None:
    """``refusal-guard eval`` against llama.cpp: it runs (no errors) and fails the gate, because a base
    model answers the harmful suite; the report says so."""
    report = tmp_path / "gate.json"
    cmd = [sys.executable, "-m", "proxy.cli", "eval", "--base-url", llamacpp + "/v1", "--model", "gemma"]
    cmd += ["--n", "6", "--max-tokens", "24", "--concurrency", "2", "--report", str(report)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    data = json.loads(report.read_text())
    harmful = next(s for s in data["suites"] if s["suite"] == "harmful")
    assert harmful["answered"] == 6 and harmful["errors"] == 0 and data["passed"] is False


def test_serve_upstream_watches_the_name_the_client_uses(llamacpp: str, tmp_path: Path) -> None:
    """The quick path, for real: ``refusal-guard serve --upstream URL`` in front of llama.cpp. The
    client's name (``gemma``, which llama.cpp does not list) gets its own series and its canaries."""
    port = free_port()
    cmd = [sys.executable, "-m", "proxy.cli", "serve", "--upstream", llamacpp + "/v1", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", timeout=60)
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)
        for _ in range(3):  # learn_model_after: 3 answered requests make a name a label
            client.chat.completions.create(model="gemma", messages=PROMPT, **GREEDY)  # type: ignore[arg-type]

        def canaries() -> dict[str, Any]:
            return dict(httpx.get(base + "/canary/state", timeout=5).json().get("models", {}))

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "gemma" not in canaries():
            time.sleep(0.5)
        assert "gemma" in canaries(), canaries()
        metrics = httpx.get(base + "/metrics", timeout=5).text
        assert 'model="gemma",traffic="canary"' in metrics.replace('upstream="default",', "")
        assert 'model="gemma",traffic="production"' in metrics.replace('upstream="default",', "")
    finally:
        proc.terminate()
        proc.wait(30)
