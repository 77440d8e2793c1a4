"""Finding the assistant's answer in bodies and streams of each endpoint."""

from __future__ import annotations

import orjson

from proxy.extract import answers_from_body, answers_from_stream, prompt_text


def sse(*objs: object, done: bool = True) -> bytes:
    out = b"".join(b"data: " + orjson.dumps(o) + b"\n\n" for o in objs)
    return out + (b"data: [DONE]\n\n" if done else b"")


def test_chat_body_all_choices_refusal_field_and_tool_calls() -> None:
    """Every choice becomes an answer; OpenAI's refusal field and tool calls are flagged."""
    body = orjson.dumps(
        {
            "choices": [
                {"index": 0, "message": {"content": "Hello"}},
                {"index": 1, "message": {"content": None, "refusal": "I can't help with that."}},
                {"index": 2, "message": {"content": None, "tool_calls": [{"id": "t", "type": "function"}]}},
                {"index": 3, "message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}},
            ]
        }
    )
    a = answers_from_body("chat", body)
    assert [x.text for x in a] == ["Hello", "", "", "ab"]
    assert [x.provider_refusal for x in a] == [False, True, False, False]
    assert a[2].tool_call


def test_chat_stream_reassembles_choices_in_order() -> None:
    """Deltas of interleaved choices are joined per index."""
    raw = sse(
        {"choices": [{"index": 1, "delta": {"content": "B1 "}}]},
        {"choices": [{"index": 0, "delta": {"content": "A1 "}}]},
        {"choices": [{"index": 0, "delta": {"content": "A2"}}, {"index": 1, "delta": {"content": "B2"}}]},
        {"choices": [{"index": 0, "delta": {"refusal": "no"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"total_tokens": 3}},
    )
    a = answers_from_stream("chat", raw)
    assert [x.text for x in a] == ["A1 A2", "B1 B2"]
    assert a[0].provider_refusal and not a[1].provider_refusal


def test_stream_with_crlf_and_partial_tail() -> None:
    """CRLF framing and a cut-off last event are tolerated."""
    raw = sse({"choices": [{"index": 0, "text": "x"}]}, done=False).replace(b"\n", b"\r\n") + b'data: {"choi'
    assert [x.text for x in answers_from_stream("completions", raw)] == ["x"]


def test_responses_body_and_stream() -> None:
    """Responses API: output_text parts joined; refusal parts and function calls flagged."""
    body = orjson.dumps(
        {
            "object": "response",
            "output": [
                {
                    "type": "message",
                    "content": [{"type": "output_text", "text": "Hi "}, {"type": "output_text", "text": "there"}],
                },
            ],
        }
    )
    assert answers_from_body("responses", body)[0].text == "Hi there"
    body = orjson.dumps(
        {"object": "response", "output": [{"type": "message", "content": [{"type": "refusal", "refusal": "No"}]}]}
    )
    assert answers_from_body("responses", body)[0].provider_refusal
    raw = (
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"Hel"}\n\n'
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"lo"}\n\n'
    )
    assert answers_from_stream("responses", raw)[0].text == "Hello"


def test_error_bodies_have_no_answers() -> None:
    """An error envelope or a non-object yields nothing to classify."""
    assert answers_from_body("chat", b'{"error": {"message": "x"}}') == []
    assert answers_from_body("chat", b"[1]") == []


def test_prompt_text() -> None:
    """The last user turn is the prompt."""
    req = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "q2"}]},
        ]
    }
    assert prompt_text("chat", req) == "q2"
    assert prompt_text("completions", {"prompt": ["p1", "p2"]}) == "p2"
    assert prompt_text("responses", {"input": "hello"}) == "hello"


def events(*objs: dict[str, object]) -> bytes:
    return b"".join(b"event: " + str(o["type"]).encode() + b"\ndata: " + orjson.dumps(o) + b"\n\n" for o in objs)


def test_messages_body_text_blocks_refusal_and_tool_use() -> None:
    """Anthropic's message: text blocks joined, ``stop_reason: refusal`` is the provider's refusal, a
    ``tool_use`` block a tool call; an error object holds no answer."""
    text = {"type": "message", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]}
    [a] = answers_from_body("messages", orjson.dumps({**text, "stop_reason": "end_turn"}))
    assert (a.text, a.provider_refusal, a.tool_call) == ("Hello", False, False)
    [r] = answers_from_body("messages", orjson.dumps({"type": "message", "content": [], "stop_reason": "refusal"}))
    assert r.provider_refusal
    tool = {"type": "message", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}
    [t] = answers_from_body("messages", orjson.dumps({**tool, "stop_reason": "tool_use"}))
    assert t.tool_call and not t.text
    assert answers_from_body("messages", b'{"type": "error", "error": {"type": "api_error", "message": "x"}}') == []


def test_messages_stream_is_reassembled() -> None:
    """Text deltas of every text block, in order; tool-use blocks and JSON deltas flag a tool call;
    ``message_delta``'s stop reason; pings ignored; events before ``message_start`` are not an answer."""
    raw = events(
        {"type": "message_start", "message": {"type": "message", "content": [], "stop_reason": None}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "I can"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "not."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "f"}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "message_delta", "delta": {"stop_reason": "refusal"}, "usage": {"output_tokens": 3}},
        {"type": "message_stop"},
    )
    [a] = answers_from_stream("messages", raw)
    assert (a.text, a.provider_refusal, a.tool_call) == ("I cannot.", True, True)
    assert answers_from_stream("messages", events({"type": "content_block_delta", "delta": {"text": "x"}})) == []
    assert prompt_text("messages", {"messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]}) == "q"
