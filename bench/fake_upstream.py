"""A fast fake OpenAI-compatible upstream for benchmarks: a raw ASGI app (no framework) that answers
chat completions at once, or streams 20 chunks 5 ms apart when ``stream`` is true. It is also an
OTLP/HTTP trace sink (``POST /v1/traces``: an empty ExportTraceServiceResponse), for the tracing bench."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson

TEXT = "Paris is the capital of France. " * 20
BODY = orjson.dumps(
    {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
)
MODELS = orjson.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]})
CHUNKS = [
    b"data: "
    + orjson.dumps(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}],
        }
    )
    + b"\n\n"
    for i in range(20)
] + [b"data: [DONE]\n\n"]
CHUNK_GAP = 0.005


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    if scope["path"] == "/v1/traces":  # OTLP/HTTP: accepted, dropped
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/x-protobuf")]}
        )
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"].endswith("/models"):
        payload = MODELS
    elif b'"stream":true' in body.replace(b" ", b""):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for i, c in enumerate(CHUNKS):
            if i:
                await asyncio.sleep(CHUNK_GAP)
            await send({"type": "http.response.body", "body": c, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    else:
        payload = BODY
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def launch(port: int) -> subprocess.Popen[bytes]:
    """This app under uvicorn on ``port``, pinned to core 1 (the load generator's core)."""
    cmd = ["taskset", "-c", "1", sys.executable, "-m", "uvicorn", "bench.fake_upstream:app", "--port", str(port)]
    return subprocess.Popen(
        [*cmd, "--log-level", "warning", "--no-access-log"],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
