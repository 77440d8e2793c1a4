"""Checks on request bodies: only what the proxy relies on, or what would make an upstream 500.

Unknown fields pass through untouched; the upstream stays the judge of everything else. Parsing
is orjson's, once, on the hot path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import ClientDisconnect

from proxy.errors import BadRequest, ClientGone, PayloadTooLarge, RequestTimeout

INT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "n", "seed", "top_logprobs", "best_of")
NUM_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
BOOL_FIELDS = ("stream", "logprobs", "echo", "store", "parallel_tool_calls")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400 saying why not."""
    if not body.strip():
        raise BadRequest("The request body is empty; expected a JSON object.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc.msg} (position {exc.pos}).") from None
    if not isinstance(data, dict):
        raise BadRequest(f"The request body must be a JSON object, not {type(data).__name__}.")
    return data


def _type_name(v: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), type(v).__name__
    )


def check_request(endpoint: str, data: dict[str, Any]) -> tuple[str, bool]:
    """Validate the fields the proxy reads; return ``(model, stream)``.

    >>> check_request("chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    ('m', False)
    """
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("`model` is required and must be a non-empty string.", param="model")
    if len(model) > 256:
        raise BadRequest("`model` is longer than 256 characters.", param="model")
    for name in BOOL_FIELDS:
        v = data.get(name)
        if v is not None and not isinstance(v, bool):
            raise BadRequest(f"`{name}` must be a boolean, not {_type_name(v)}.", param=name)
    for name in INT_FIELDS:
        v = data.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise BadRequest(f"`{name}` must be an integer, not {_type_name(v)}.", param=name)
    for name in NUM_FIELDS:
        v = data.get(name)
        if v is not None and (not isinstance(v, int | float) or isinstance(v, bool)):
            raise BadRequest(f"`{name}` must be a number, not {_type_name(v)}.", param=name)
    if endpoint in ("chat", "messages"):
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("`messages` is required and must be a non-empty array.", param="messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise BadRequest(f"`messages[{i}]` must be an object with a string `role`.", param=f"messages[{i}]")
            c = m.get("content")
            if c is not None and not isinstance(c, str | list):
                raise BadRequest(
                    f"`messages[{i}].content` must be a string or an array.", param=f"messages[{i}].content"
                )
        system = data.get("system")
        if endpoint == "messages" and system is not None and not isinstance(system, str | list):
            raise BadRequest("`system` must be a string or an array of content blocks.", param="system")
    elif endpoint == "completions":
        prompt = data.get("prompt")
        if not isinstance(prompt, str | list):
            raise BadRequest("`prompt` is required and must be a string or an array.", param="prompt")
    elif endpoint == "responses":
        inp = data.get("input")
        if inp is not None and not isinstance(inp, str | list):
            raise BadRequest("`input` must be a string or an array.", param="input")
    return model, bool(data.get("stream"))


async def read_body(
    receive_stream: AsyncIterator[bytes],
    declared: str | None,
    limit: int,
    *,
    timeout: float = 20.0,
    min_rate: float = 500.0,
) -> bytes:
    """Read a request body of at most ``limit`` bytes; a larger one is a 413 before or while reading.

    Paced as Apache's ``mod_reqtimeout`` (``body=20,MinRate=500``): no byte for ``timeout`` seconds,
    or a body slower than ``timeout`` seconds plus one second per ``min_rate`` bytes, is a 408. A
    client that closes before its body is in is :class:`ClientGone` (counted as 499, not answered).
    """
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest("The Content-Length header is not a number.") from None
        if size > limit:
            raise PayloadTooLarge(f"The request body is {size} bytes; the limit is {limit}.")
    loop = asyncio.get_running_loop()
    started = loop.time()
    parts: list[bytes] = []
    size = 0
    chunks = aiter(receive_stream)
    while True:
        allowed = started + timeout + (size / min_rate if min_rate else float("inf"))
        wait = min(timeout, allowed - loop.time())
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return b"".join(parts)
        except TimeoutError:
            raise RequestTimeout(f"The request body came too slowly ({size} bytes so far).") from None
        except ClientDisconnect:
            raise ClientGone("The client closed the connection before its request body was in.") from None
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        parts.append(chunk)
