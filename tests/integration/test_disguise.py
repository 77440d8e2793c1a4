"""A canary is byte for byte the model's recent production request at the upstream, modulo the
conversation's text, per-request ids and the credentials; and a streamed canary is read to its end, as
a client reads one (a canary that hung up early was a tell: no production stream does)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from proxy.testing import run_server, wait_until
from tests.conftest import Proxy
from tests.fleet import leaders, on_postgres, one_leader

LONG = " ".join(["Sure, here is a detailed answer to your question."] * 80)


class RecordingUpstream:
    """Records each chat request's raw headers and body; streams a long answer slowly, noting how
    much of it it got to send before the client went away."""

    def __init__(self) -> None:
        self.requests: list[tuple[list[tuple[bytes, bytes]], bytes]] = []
        self.cut_short = threading.Event()
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append((list(request.scope["headers"]), body))
        words = LONG.split(" ")

        async def events() -> Any:
            sent = 0
            try:
                for i in range(0, len(words), 4):
                    delta = {"content": " ".join(words[i : i + 4]) + " "}
                    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
                    chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": None}]
                    yield b"data: " + orjson.dumps(chunk) + b"\n\n"
                    sent += 1
                    await asyncio.sleep(0.01)
                yield b"data: [DONE]\n\n"
            finally:
                if sent < len(words) // 4:
                    self.cut_short.set()

        return StreamingResponse(events(), media_type="text/event-stream")


def masked(headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers without the ones that differ per request; the body with every message text blanked,
    in place, in the bytes as they were sent."""
    per_request = {b"content-length", b"traceparent", b"x-request-id"}
    keep = [(k, v) for k, v in headers if k not in per_request]
    for m in json.loads(body)["messages"]:
        content = m["content"]
        texts = [content] if isinstance(content, str) else [p["text"] for p in content]
        for t in texts:
            body = body.replace(json.dumps(t, ensure_ascii=False, separators=(",", ":")).encode(), b'"TEXT"', 1)
    return keep, body


def send_production(up: RecordingUpstream, client: openai.OpenAI) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """A streamed production request as an app sends it; what the upstream received."""
    stream = client.chat.completions.create(
        model="acme-chat",
        messages=[
            # ", " and ": " inside a string are the text's, not the client's JSON style (compact, as the SDK's)
            {"role": "system", "content": "You are Acme's assistant, and brief: one line."},
            {"role": "user", "content": "my earlier question"},
            {"role": "assistant", "content": "my earlier answer"},
            {"role": "user", "content": "what is my order status?"},
        ],
        temperature=0.4,
        max_tokens=700,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    return next(r for r in up.requests if b"order status" in r[1])


def assert_copies(production: tuple[list[tuple[bytes, bytes]], bytes], canaries: list[Any]) -> None:
    """Each canary is ``production`` as :func:`masked` sees it, with its own trace id and texts."""
    want = masked(*production)
    for canary in canaries:
        assert masked(*canary) == want
        names = [k for k, _ in canary[0]]
        assert b"traceparent" in names
        trace = dict(canary[0])[b"traceparent"]
        assert trace != dict(production[0])[b"traceparent"] and len(trace) == 55
        sent = json.loads(canary[1])
        assert "my earlier" not in json.dumps(sent) and "order status" not in json.dumps(sent)
        assert sent["max_tokens"] == 700 and sent["stream"] is True


def canaries_after(up: RecordingUpstream, n: int = 2, timeout: float = 20) -> list[Any]:
    """The next ``n`` requests the upstream receives (canaries: no production is sent meanwhile)."""
    mark = len(up.requests)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(up.requests) < mark + n:
        time.sleep(0.05)
    return up.requests[mark:]


def test_a_canary_is_the_production_request_byte_for_byte(start_proxy: Any) -> None:
    """Same header names, order and values (the SDK's own included), same body keys, order,
    parameters and serialisation; only the texts, the trace id and the length differ."""
    up = RecordingUpstream()
    with run_server(up.app) as server:
        p: Proxy = start_proxy(
            {
                "upstreams": [{"name": "u", "base_url": server.url + "/v1", "models": ["acme-chat"]}],
                "canary": {"enabled": True, "interval_seconds": 0.5, "per_round": 1},
            }
        )
        production = send_production(up, p.client(default_headers={"x-app-version": "7.4.1"}))
        assert p.wait_for(lambda: p.app.state.scheduler.shape.has("acme-chat"))
        time.sleep(1.0)  # canaries built before the production request was seen have arrived by now
        canaries = canaries_after(up)
        assert canaries, "no canary arrived after the production request was seen"
        assert_copies(production, canaries)
        assert wait_until(lambda: len(up.requests) > len(canaries) + 1, timeout=20)  # later canaries came and went
        assert not up.cut_short.is_set()  # every stream was read to its end


@pytest.mark.timeout(120)
def test_the_leader_copies_a_request_that_arrived_on_another_replica(tmp_path: Path) -> None:
    """Two replicas on one real PostgreSQL state store: the production request goes to the one that
    does not lead; the leader's canaries are that request, byte for byte as above."""
    up = RecordingUpstream()
    canary = {"interval_seconds": 0.5, "per_round": 1}
    with run_server(up.app) as server, on_postgres(tmp_path, 2, server.url, ["acme-chat"], canary=canary) as replicas:
        assert wait_until(lambda: one_leader(replicas), timeout=20)
        (leader,) = leaders(replicas)
        follower = next(r for r in replicas if r.state()["replica"] != leader)
        client = openai.OpenAI(
            base_url=follower.url + "/v1", api_key="unused", default_headers={"x-app-version": "7.4.1"}
        )
        production = send_production(up, client)
        time.sleep(3.0)  # published (1 s), read by the leader (1 s), canaries built before it have arrived
        canaries = canaries_after(up)
        assert canaries, "no canary arrived after the production request was seen"
        assert_copies(production, canaries)
