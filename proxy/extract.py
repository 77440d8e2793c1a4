"""Find the assistant's answer in a response body or a reassembled SSE stream.

Runs off the hot path (in the classification worker), so it may parse JSON freely. Each choice
becomes one :class:`Answer`; a provider's own refusal signal and tool calls are kept as flags so
the classifier can short-circuit them. Endpoint families: ``chat``, ``completions`` and ``responses``
(OpenAI's APIs) and ``messages`` (Anthropic's Messages API: text content blocks, ``stop_reason``
``refusal`` as the provider's refusal, a ``tool_use`` block as a tool call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

_REFUSAL_FINISH = frozenset({"content_filter", "refusal"})
_TOOL_ITEMS = frozenset({"function_call", "custom_tool_call", "mcp_call", "computer_call"})
_TOOL_BLOCKS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})  # Anthropic's content blocks


@dataclass(slots=True)
class Answer:
    text: str = ""
    provider_refusal: bool = False
    tool_call: bool = False


def _content_text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def prompt_text(endpoint: str, request: dict[str, Any]) -> str | None:
    """The last user turn of a request, for detectors that look at the prompt."""
    if endpoint in ("chat", "messages"):
        for m in reversed(request.get("messages") or []):
            if isinstance(m, dict) and m.get("role") == "user":
                return _content_text(m.get("content"))
        return None
    key = "prompt" if endpoint == "completions" else "input"
    value = request.get(key)
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        last = value[-1]
        if isinstance(last, str):
            return last
        if isinstance(last, dict):
            return _content_text(last.get("content"))
    return None


def system_text(endpoint: str, request: dict[str, Any]) -> str | None:
    """The system prompt (chat's system and developer turns, the Messages API's ``system``, the
    Responses API's ``instructions``), or None."""
    if endpoint == "chat":
        parts = [
            _content_text(m.get("content"))
            for m in request.get("messages") or []
            if isinstance(m, dict) and m.get("role") in ("system", "developer")
        ]
        return "\n".join(parts) or None
    value = request.get("system" if endpoint == "messages" else "instructions" if endpoint == "responses" else "")
    return (value if isinstance(value, str) else _content_text(value)) or None


def _chat_choice(choice: dict[str, Any], msg_key: str) -> Answer:
    msg = choice.get(msg_key) or {}
    a = Answer(text=_content_text(msg.get("content")))
    a.provider_refusal = bool(msg.get("refusal")) or choice.get("finish_reason") in _REFUSAL_FINISH
    a.tool_call = bool(msg.get("tool_calls") or msg.get("function_call"))
    return a


def _responses_output(output: Any) -> Answer:
    a = Answer()
    parts: list[str] = []
    for item in output if isinstance(output, list) else []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            for c in item.get("content") or []:
                if not isinstance(c, dict):
                    continue
                if c.get("type") == "refusal":
                    a.provider_refusal = True
                elif isinstance(c.get("text"), str):
                    parts.append(c["text"])
        elif kind in _TOOL_ITEMS:
            a.tool_call = True
    a.text = "".join(parts)
    return a


def _message_blocks(blocks: Any, stop_reason: Any) -> Answer:
    """An Anthropic message's answer: its text blocks, ``stop_reason`` and tool-use blocks."""
    items = [b for b in blocks if isinstance(b, dict)] if isinstance(blocks, list) else []
    return Answer(
        text="".join(b["text"] for b in items if b.get("type") == "text" and isinstance(b.get("text"), str)),
        provider_refusal=stop_reason == "refusal",
        tool_call=any(b.get("type") in _TOOL_BLOCKS for b in items),
    )


def answers_from_body(endpoint: str, body: bytes) -> list[Answer]:
    """Answers in a non-streamed response body; empty when it holds none (an error, say)."""
    data = orjson.loads(body)
    if not isinstance(data, dict):
        return []
    if endpoint == "messages":
        if data.get("type") != "message":
            return []
        return [_message_blocks(data.get("content"), data.get("stop_reason"))]
    if endpoint == "responses":
        if data.get("object") != "response" and "output" not in data:
            return []
        a = _responses_output(data.get("output"))
        details = data.get("incomplete_details") or {}
        if isinstance(details, dict) and details.get("reason") == "content_filter":
            a.provider_refusal = True
        return [a]
    choices = data.get("choices")
    if not isinstance(choices, list):
        return []
    if endpoint == "chat":
        return [_chat_choice(c, "message") for c in choices if isinstance(c, dict)]
    return [
        Answer(text=c.get("text") or "", provider_refusal=c.get("finish_reason") in _REFUSAL_FINISH)
        for c in choices
        if isinstance(c, dict)
    ]


def sse_events(raw: bytes) -> list[tuple[str | None, bytes]]:
    """Split an SSE byte stream into (event, data) pairs; comments and partial tails are dropped."""
    events: list[tuple[str | None, bytes]] = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        event, data = None, []
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" "))
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode("utf-8", "replace")
        if data:
            events.append((event, b"\n".join(data)))
    return events


def answers_from_stream(endpoint: str, raw: bytes) -> list[Answer]:
    """Reassemble a streamed response's choices from its SSE events."""
    by_index: dict[int, Answer] = {}
    texts: dict[int, list[str]] = {}
    for event, data in sse_events(raw):
        if data == b"[DONE]":
            continue
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        if endpoint == "responses":
            _responses_event(obj.get("type") or event, obj, by_index, texts)
            continue
        if endpoint == "messages":
            _messages_event(obj.get("type") or event, obj, by_index, texts)
            continue
        for c in obj.get("choices") or []:
            if not isinstance(c, dict):
                continue
            i = c.get("index", 0) if isinstance(c.get("index", 0), int) else 0
            a = by_index.setdefault(i, Answer())
            parts = texts.setdefault(i, [])
            if c.get("finish_reason") in _REFUSAL_FINISH:
                a.provider_refusal = True
            if endpoint == "chat":
                delta = c.get("delta") or {}
                if isinstance(delta, dict):
                    parts.append(_content_text(delta.get("content")))
                    a.provider_refusal |= bool(delta.get("refusal"))
                    a.tool_call |= bool(delta.get("tool_calls") or delta.get("function_call"))
            elif isinstance(c.get("text"), str):
                parts.append(c["text"])
    for i, a in by_index.items():
        if i in texts and not a.text:
            a.text = "".join(texts[i])
    return [by_index[i] for i in sorted(by_index)]


def _responses_event(kind: Any, obj: dict[str, Any], by_index: dict[int, Answer], texts: dict[int, list[str]]) -> None:
    a = by_index.setdefault(0, Answer())
    if kind == "response.completed" and isinstance(obj.get("response"), dict):
        done = _responses_output(obj["response"].get("output"))
        a.text, a.tool_call = done.text, a.tool_call or done.tool_call
        a.provider_refusal |= done.provider_refusal
        texts.pop(0, None)
    elif kind == "response.output_text.delta" and isinstance(obj.get("delta"), str):
        texts.setdefault(0, []).append(obj["delta"])
    elif kind in ("response.refusal.delta", "response.refusal.done"):
        a.provider_refusal = True
    elif (
        kind == "response.output_item.added"
        and isinstance(obj.get("item"), dict)
        and obj["item"].get("type") in _TOOL_ITEMS
    ):
        a.tool_call = True


def _messages_event(kind: Any, obj: dict[str, Any], by_index: dict[int, Answer], texts: dict[int, list[str]]) -> None:
    """One event of an Anthropic Messages stream: ``message_start``, ``content_block_start`` /
    ``_delta`` / ``_stop``, ``message_delta`` (the ``stop_reason``), ``message_stop``; pings and
    errors carry no answer."""
    if kind == "message_start" and isinstance(obj.get("message"), dict):
        by_index.setdefault(0, Answer())
        texts.setdefault(0, [])
        return
    a = by_index.get(0)
    if a is None:  # events before message_start: not a stream this parser knows
        return
    if kind == "content_block_start" and isinstance(obj.get("content_block"), dict):
        block = obj["content_block"]
        a.tool_call |= block.get("type") in _TOOL_BLOCKS
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts[0].append(block["text"])
    elif kind == "content_block_delta" and isinstance(obj.get("delta"), dict):
        delta = obj["delta"]
        if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
            texts[0].append(delta["text"])
    elif kind == "message_delta" and isinstance(obj.get("delta"), dict):
        a.provider_refusal |= obj["delta"].get("stop_reason") == "refusal"


def sole_text(endpoint: str, body: bytes, stream: bool) -> str | None:
    """The text of an answer with exactly one choice and no tool call (what ``completion_tokens``
    counts, what a conversation sends back); None otherwise, or when the body cannot be read.

    >>> sole_text("chat", b'{"choices": [{"message": {"content": "Hi."}}]}', False)
    'Hi.'
    """
    try:
        answers = (answers_from_stream if stream else answers_from_body)(endpoint, body)
    except ValueError:
        return None
    if len(answers) != 1 or answers[0].tool_call:
        return None
    return answers[0].text
