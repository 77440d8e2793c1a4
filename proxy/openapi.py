"""The proxy's own contract as OpenAPI 3.1, served at ``/openapi.json``.

It states what the proxy checks (``proxy.wire``) and how it answers, not the upstream's full API:
unknown fields pass through, so every request schema allows additional properties. Clients and
schemathesis (tests/contract/test_schemathesis.py) read it.
"""

from __future__ import annotations

from typing import Any

from proxy.wire import BOOL_FIELDS, INT_FIELDS, NUM_FIELDS

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_TEXT_OR_PARTS = {"oneOf": [{"type": "string"}, {"type": "array", "items": {}}]}


def _params() -> dict[str, Any]:
    out: dict[str, Any] = {"model": {"type": "string"}}
    out.update({n: {"type": "integer"} for n in INT_FIELDS})
    out.update({n: {"type": "number"} for n in NUM_FIELDS})
    out.update({n: {"type": "boolean"} for n in BOOL_FIELDS})
    return out


def _body(required: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "required": ["model", *required], "properties": {**_params(), **extra}}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _responses(summary: str) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": _ERROR}}}
    return {
        "200": {"description": summary + " (the upstream's answer, relayed unchanged; SSE when `stream`)"},
        **{
            code: {"description": why, **error}
            for code, why in (
                ("400", "malformed JSON or a wrong type"),
                ("401", "missing or wrong client key"),
                ("404", "unknown model"),
                ("413", "request body over max_body_bytes"),
                ("502", "upstream unreachable, broken off, or its answer over max_response_bytes"),
                ("503", "model quarantined (drifting canaries), or strict audit unavailable"),
                ("504", "upstream timeout"),
            )
        },
        "default": {"description": "any other upstream status, relayed unchanged"},
    }


def document() -> dict[str, Any]:
    message = {
        "type": "object",
        "required": ["role"],
        "properties": {"role": {"type": "string"}, "content": {"oneOf": [{"type": "null"}, *_TEXT_OR_PARTS["oneOf"]]}},
    }
    ops = {
        "/v1/chat/completions": (
            "Chat completion, classified",
            _body(["messages"], {"messages": {"type": "array", "minItems": 1, "items": message}}),
        ),
        "/v1/completions": ("Text completion, classified", _body(["prompt"], {"prompt": _TEXT_OR_PARTS})),
        "/v1/responses": ("Responses API, classified", _body([], {"input": _TEXT_OR_PARTS})),
    }
    paths: dict[str, Any] = {
        path: {"post": {"summary": summary, "requestBody": body, "responses": _responses(summary)}}
        for path, (summary, body) in ops.items()
    }
    paths["/v1/models"] = {
        "get": {"summary": "The configured models", "responses": {"200": {"description": "an OpenAI model list"}}}
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "refusal-guard", "version": "1"},
        "paths": paths,
    }
