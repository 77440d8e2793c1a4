"""A misbehaving-on-purpose OpenAI-compatible upstream for tests. The model name picks the behaviour.

- ``echo``: records the request (body, headers) and answers a fixed chat completion.
- ``gated``: streams one chunk, then waits until the test opens ``gate`` before sending the rest.
- ``endless``: streams a chunk every 10 ms until the client goes away; records that it was cancelled.
- ``die``: streams two chunks, then drops the connection mid-stream.
- ``slow``: waits ``slow_seconds`` before answering (longer than the proxy's read timeout).
- ``status-NNN``: answers with that HTTP status and an OpenAI error body.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

ANSWER = "Here is the answer you asked for."


def chunk(text: str, finish: str | None = None) -> bytes:
    obj = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class TestUpstream:
    __test__ = False

    def __init__(self, slow_seconds: float = 3.0) -> None:
        self.seen: list[dict[str, Any]] = []
        self.gate = threading.Event()
        self.cancelled = threading.Event()
        self.slow_seconds = slow_seconds
        self.listed = ["echo"]  # what GET /v1/models lists
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/{path:path}", self.other, methods=["GET", "POST"]),
            ]
        )

    async def models(self, request: Request) -> Response:
        return Response(
            orjson.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in self.listed]}),
            media_type="application/json",
        )

    async def other(self, request: Request) -> Response:
        body = await request.body()
        self.seen.append({"path": request.url.path, "body": body, "headers": dict(request.headers)})
        return Response(
            orjson.dumps({"object": "list", "data": [], "path": request.url.path}),
            media_type="application/json",
            headers={"x-upstream": "yes"},
        )

    async def chat(self, request: Request) -> Response:
        raw = await request.body()
        body = orjson.loads(raw)
        self.seen.append({"path": request.url.path, "body": raw, "headers": dict(request.headers)})
        model: str = body["model"]
        if model.startswith("status-"):
            code = int(model.split("-")[1])
            return Response(
                orjson.dumps({"error": {"message": f"upstream says {code}", "type": "x", "param": None, "code": None}}),
                status_code=code,
                media_type="application/json",
                headers={"retry-after": "7"},
            )
        if model == "slow":
            await asyncio.sleep(self.slow_seconds)
        if model == "gated":
            return StreamingResponse(self._gated(), media_type="text/event-stream")
        if model == "endless":
            return StreamingResponse(self._endless(), media_type="text/event-stream")
        if model == "die":
            return StreamingResponse(self._die(), media_type="text/event-stream")
        if body.get("stream"):
            return StreamingResponse(self._words(ANSWER), media_type="text/event-stream")
        return Response(
            orjson.dumps(
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": model,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 7, "total_tokens": 8},
                }
            ),
            media_type="application/json",
            headers={"x-upstream": "yes", "openai-processing-ms": "12"},
        )

    async def _words(self, text: str) -> AsyncIterator[bytes]:
        for w in text.split(" "):
            yield chunk(w + " ")
        yield chunk("", "stop")
        yield b"data: [DONE]\n\n"

    async def _gated(self) -> AsyncIterator[bytes]:
        yield chunk("first ")
        opened = await asyncio.to_thread(self.gate.wait, 10)
        yield chunk("last" if opened else "gate-timeout", "stop")
        yield b"data: [DONE]\n\n"

    async def _endless(self) -> AsyncIterator[bytes]:
        try:
            while True:
                yield chunk("more ")
                await asyncio.sleep(0.01)
        finally:
            self.cancelled.set()

    async def _die(self) -> AsyncIterator[bytes]:
        yield chunk("partial ")
        yield chunk("answer ")
        raise RuntimeError("upstream crashed mid-stream (on purpose)")


class Recorder:
    """ASGI middleware around an upstream app: keeps the bytes of each response body it sent, and
    each request's path and headers, so a test can compare what the client got with what the upstream sent."""

    __test__ = False

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.paths.append(scope["path"])
        self.headers.append({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
        parts: list[bytes] = []

        async def recording(message: Any) -> None:
            if message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                if not message.get("more_body"):
                    self.bodies.append(b"".join(parts))
            await send(message)

        await self.app(scope, receive, recording)
