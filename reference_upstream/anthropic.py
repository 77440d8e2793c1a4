"""The simulator's Anthropic Messages API (``POST /v1/messages``): the same answers as its OpenAI
endpoints, in Anthropic's message object and stream events, as Anthropic's API sends them."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

_STOP = {"stop": "end_turn", "length": "max_tokens"}


def message(body: dict[str, Any], text: str, finish: str) -> dict[str, Any]:
    """The non-streamed answer: a message object with one text block."""
    return {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [{"type": "text", "text": text}],
        "stop_reason": _STOP.get(finish, "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": len(text.split())},
    }


def events(body: dict[str, Any], pieces: list[str], finish: str) -> list[bytes]:
    """The streamed answer: ``message_start``, one text block's start, deltas and stop, a ping,
    ``message_delta`` with the stop reason and usage, ``message_stop``; each an ``event:`` + ``data:`` pair."""
    start = message(body, "", finish)
    start.update(content=[], stop_reason=None, usage={"input_tokens": 10, "output_tokens": 1})
    out: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}} for p in pieces),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": _STOP.get(finish, "end_turn"), "stop_sequence": None},
            "usage": {"output_tokens": len("".join(pieces).split())},
        },
        {"type": "message_stop"},
    ]
    return [b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in out]
