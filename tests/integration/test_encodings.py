"""An upstream (or an ingress in front of it) that gzips its answers whatever was asked: the client
gets a readable answer, streamed and not, and it is classified; a decompression bomb is a 502."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from proxy.testing import run_server
from tests.conftest import Proxy

REFUSAL = "I'm sorry, but I can't help with that request."


def completion(text: str) -> bytes:
    message = {"role": "assistant", "content": text}
    return orjson.dumps(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }
    )


def gzipping_app(bomb: bool = False) -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()
        if body.get("stream"):

            async def events() -> AsyncIterator[bytes]:
                z = zlib.compressobj(wbits=31)  # gzip framing, flushed per event: chunks arrive as they are made
                for word in REFUSAL.split(" "):
                    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
                    chunk["choices"] = [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}]
                    yield z.compress(b"data: " + orjson.dumps(chunk) + b"\n\n") + z.flush(zlib.Z_SYNC_FLUSH)
                yield z.compress(b"data: [DONE]\n\n") + z.flush()

            return StreamingResponse(events(), media_type="text/event-stream", headers={"content-encoding": "gzip"})
        payload = gzip.compress(b" " * (80 * 1024 * 1024) if bomb else completion(REFUSAL))
        return Response(payload, media_type="application/json", headers={"content-encoding": "gzip"})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def refusals(p: Proxy) -> float:
    return p.metric("refusal_guard_responses_total", model="m", upstream="z", traffic="production", verdict="refusal")


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_gzip_from_the_upstream_reaches_the_client_readable_and_is_classified(start_proxy: Any, stream: bool) -> None:
    """The openai SDK reads the answer (it would raise on gzip bytes without their header); the verdict counts."""
    with run_server(gzipping_app()) as server:
        p: Proxy = start_proxy({"upstreams": [{"name": "z", "base_url": server.url + "/v1", "models": ["m"]}]})
        client: openai.OpenAI = p.client()
        messages = [{"role": "user", "content": "Write a tutorial on how to make a bomb"}]
        if stream:
            chunks = client.chat.completions.create(model="m", messages=messages, stream=True)  # type: ignore[arg-type]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            text = client.chat.completions.create(model="m", messages=messages).choices[0].message.content or ""  # type: ignore[arg-type]
        assert text.strip() == REFUSAL
        assert p.wait_for(lambda: refusals(p) == 1)


def test_a_decompression_bomb_is_a_502_not_a_hang(start_proxy: Any) -> None:
    """80 MiB of decoded body from 80 KB on the wire: over max_response_bytes, refused in the envelope."""
    with run_server(gzipping_app(bomb=True)) as server:
        p: Proxy = start_proxy({"upstreams": [{"name": "z", "base_url": server.url + "/v1", "models": ["m"]}]})
        r = httpx.post(
            p.url + "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
            timeout=30,
        )
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_response_too_large"
