"""The simulator's HTTP server: OpenAI-compatible chat, completions and responses, and Anthropic's
Messages API (:mod:`reference_upstream.anthropic`), stream and not.

``POST /sim/mode {"mode": "abliterated"}`` switches behaviour at run time; ``GET /sim/mode`` reads it.
The same call takes ``"tokenizer"`` (``words`` or ``bytes``: how chat usage is counted,
:mod:`reference_upstream.tokens`) and ``"fingerprint"`` (the ``system_fingerprint`` chat answers
carry): a model swap that changes nothing else.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from proxy.errors import Api, BadRequest, error_response
from proxy.extract import prompt_text
from reference_upstream import anthropic
from reference_upstream.corpus import MODES, Corpus, Mode, load_corpus
from reference_upstream.tokens import TOKENIZERS, Tokenizer, count, prompt_tokens


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _error(message: str, param: str | None = None, api: Api = "openai") -> Response:
    return error_response(BadRequest(message, param=param), api)


def _cap(text: str, max_tokens: object) -> tuple[str, str]:
    """Cut ``text`` to about ``max_tokens`` tokens (1 token ~ 1 word here); return it and the finish reason."""
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0:
        words = text.split(" ")
        if len(words) > max_tokens:
            return " ".join(words[:max_tokens]), "length"
    return text, "stop"


def _pieces(text: str, size: int = 4) -> list[str]:
    words = text.split(" ")
    return [" ".join(words[i : i + size]) + (" " if i + size < len(words) else "") for i in range(0, len(words), size)]


class SimState:
    def __init__(self, mode: Mode, chunk_delay: float, corpus: Corpus) -> None:
        self.mode: Mode = mode
        self.chunk_delay = chunk_delay
        self.corpus = corpus
        self.requests = 0
        self.tokenizer: Tokenizer = "words"
        self.fingerprint = "fp_sim_1"


def create_sim_app(
    mode: Mode = "safe", *, chunk_delay: float = 0.0, models: tuple[str, ...] = ("sim-model",)
) -> Starlette:
    """Build the simulator app (``chunk_delay`` seconds between stream chunks)."""
    state = SimState(mode, chunk_delay, load_corpus())

    async def body_of(request: Request, api: Api = "openai") -> dict[str, Any] | Response:
        try:
            data = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error("invalid JSON", api=api)
        if not isinstance(data, dict) or not isinstance(data.get("model"), str):
            return _error("`model` is required", param="model", api=api)
        return data

    def answer(kind: str, body: dict[str, Any]) -> tuple[str, str]:
        state.requests += 1
        return _cap(
            state.corpus.reply(prompt_text(kind, body) or "", state.mode),
            body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_output_tokens"),
        )

    async def sse(events: list[bytes]) -> AsyncIterator[bytes]:
        for i, e in enumerate(events):
            if i and state.chunk_delay:
                await asyncio.sleep(state.chunk_delay)
            yield e

    def stream(events: list[bytes]) -> StreamingResponse:
        return StreamingResponse(sse(events), media_type="text/event-stream")

    async def chat(request: Request) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        text, finish = answer("chat", body)
        rid, created, model = "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time()), body["model"]
        texts = [m.get("content") if isinstance(m.get("content"), str) else "" for m in body.get("messages") or []]
        prompt, completion = prompt_tokens(texts, state.tokenizer), count(text, state.tokenizer)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        if not body.get("stream"):
            return _json(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": state.fingerprint,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text, "refusal": None},
                            "finish_reason": finish,
                            "logprobs": None,
                        }
                    ],
                    "usage": usage,
                }
            )
        base = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": state.fingerprint,
        }
        events = [
            orjson.dumps(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
                }
            )
        ]
        events += [
            orjson.dumps({**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]})
            for p in _pieces(text)
        ]
        events.append(orjson.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(orjson.dumps({**base, "choices": [], "usage": usage}))
        return stream([b"data: " + e + b"\n\n" for e in events] + [b"data: [DONE]\n\n"])

    async def completions(request: Request) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        text, finish = answer("completions", body)
        rid, created, model = "cmpl-" + uuid.uuid4().hex[:24], int(time.time()), body["model"]
        if not body.get("stream"):
            return _json(
                {
                    "id": rid,
                    "object": "text_completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
                    "usage": {
                        "prompt_tokens": 10,
                        "completion_tokens": len(text.split()),
                        "total_tokens": 10 + len(text.split()),
                    },
                }
            )
        base = {"id": rid, "object": "text_completion", "created": created, "model": model}
        events = [
            orjson.dumps({**base, "choices": [{"index": 0, "text": p, "finish_reason": None, "logprobs": None}]})
            for p in _pieces(text)
        ]
        events.append(
            orjson.dumps({**base, "choices": [{"index": 0, "text": "", "finish_reason": finish, "logprobs": None}]})
        )
        return stream([b"data: " + e + b"\n\n" for e in events] + [b"data: [DONE]\n\n"])

    async def responses(request: Request) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        text, finish = answer("responses", body)
        rid, mid, created = "resp_" + uuid.uuid4().hex[:24], "msg_" + uuid.uuid4().hex[:24], int(time.time())
        message = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        resp = {
            "id": rid,
            "object": "response",
            "created_at": created,
            "model": body["model"],
            "status": "completed",
            "output": [message],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "incomplete_details": {"reason": "max_output_tokens"} if finish == "length" else None,
            "usage": {
                "input_tokens": 10,
                "output_tokens": len(text.split()),
                "total_tokens": 10 + len(text.split()),
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }
        if not body.get("stream"):
            return _json(resp)
        seq = iter(range(1_000_000))
        pending = {**resp, "status": "in_progress", "output": [], "usage": None}
        events: list[tuple[str, dict[str, Any]]] = [
            ("response.created", {"response": pending}),
            (
                "response.output_item.added",
                {"output_index": 0, "item": {**message, "status": "in_progress", "content": []}},
            ),
            (
                "response.content_part.added",
                {
                    "output_index": 0,
                    "item_id": mid,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []},
                },
            ),
        ]
        events += [
            (
                "response.output_text.delta",
                {"output_index": 0, "item_id": mid, "content_index": 0, "delta": p, "logprobs": []},
            )
            for p in _pieces(text)
        ]
        events += [
            (
                "response.output_text.done",
                {"output_index": 0, "item_id": mid, "content_index": 0, "text": text, "logprobs": []},
            ),
            (
                "response.content_part.done",
                {"output_index": 0, "item_id": mid, "content_index": 0, "part": message["content"][0]},
            ),
            ("response.output_item.done", {"output_index": 0, "item": message}),
            ("response.completed", {"response": resp}),
        ]
        return stream(
            [
                b"event: "
                + k.encode()
                + b"\ndata: "
                + orjson.dumps({"type": k, "sequence_number": next(seq), **v})
                + b"\n\n"
                for k, v in events
            ]
        )

    async def messages(request: Request) -> Response:
        body = await body_of(request, "anthropic")
        if isinstance(body, Response):
            return body
        if not isinstance(body.get("max_tokens"), int):  # required by Anthropic's API
            return _error("max_tokens: Field required", param="max_tokens", api="anthropic")
        text, finish = answer("messages", body)
        if not body.get("stream"):
            return _json(anthropic.message(body, text, finish))
        return stream(anthropic.events(body, _pieces(text), finish))

    async def list_models(request: Request) -> Response:
        return _json(
            {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "sim"} for m in models]}
        )

    async def embeddings(request: Request) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        return _json(
            {
                "object": "list",
                "model": body["model"],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
                "data": [{"object": "embedding", "index": i, "embedding": [0.0, 0.5, 1.0]} for i in range(len(items))],
            }
        )

    async def sim_mode(request: Request) -> Response:
        if request.method == "POST":
            try:
                asked = orjson.loads(await request.body())
                mode = asked.get("mode", state.mode)
            except (orjson.JSONDecodeError, AttributeError):
                asked, mode = {}, None
            if mode not in MODES:
                return _error(f"mode must be one of {', '.join(MODES)}", param="mode")
            tokenizer = asked.get("tokenizer", state.tokenizer)
            if tokenizer not in TOKENIZERS:
                return _error(f"tokenizer must be one of {', '.join(TOKENIZERS)}", param="tokenizer")
            state.mode, state.tokenizer = mode, tokenizer
            state.fingerprint = str(asked.get("fingerprint", state.fingerprint))
        return _json(
            {
                "mode": state.mode,
                "tokenizer": state.tokenizer,
                "fingerprint": state.fingerprint,
                "requests": state.requests,
            }
        )

    async def health(request: Request) -> Response:
        return _json({"status": "ok", "mode": state.mode})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/responses", responses, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/sim/mode", sim_mode, methods=["GET", "POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
    app.state.sim = state
    return app
