"""The bodies the proxy checks and the errors it answers with, as pydantic models for the OpenAPI
document (``/openapi.json``, built by FastAPI from the routes in :mod:`proxy.routes`).

The hot path never builds these: a classified request is relayed as it was sent, checked only by
:func:`proxy.wire.check_request`. The models are made from the same field lists, so the document
states exactly what is checked; unknown fields pass through, so every request model allows extra
properties. Clients and schemathesis (tests/contract/test_schemathesis.py) read the document.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from proxy.wire import BOOL_FIELDS, INT_FIELDS, NUM_FIELDS

Text = str | list[Any]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Message(_Open):
    role: str
    content: Text | None = None


def _request(name: str, doc: str, **fields: Any) -> type[BaseModel]:
    common: dict[str, Any] = {"model": (str, Field(min_length=1, max_length=256))}
    common.update({n: (int | None, None) for n in INT_FIELDS})
    common.update({n: (float | None, None) for n in NUM_FIELDS})
    common.update({n: (bool | None, None) for n in BOOL_FIELDS})
    return create_model(name, __base__=_Open, __doc__=doc, **common, **fields)


Messages = (list[Message], Field(min_length=1))
REQUESTS: dict[str, type[BaseModel]] = {  # by endpoint (proxy.exchange.ENDPOINTS)
    "chat": _request("ChatCompletionRequest", "OpenAI chat completion", messages=Messages),
    "completions": _request("CompletionRequest", "OpenAI text completion", prompt=(Text, ...)),
    "responses": _request("ResponsesRequest", "OpenAI Responses API", input=(Text | None, None)),
    "messages": _request("MessagesRequest", "Anthropic Messages API", messages=Messages, system=(Text | None, None)),
}


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """OpenAI's error envelope: every error the proxy itself answers outside ``/v1/messages``."""

    error: OpenAIErrorDetail


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    """Anthropic's error envelope: errors on ``/v1/messages``."""

    type: Literal["error"]
    error: AnthropicErrorDetail


_WHY = {
    400: "malformed JSON, a wrong type, or a path the proxy refuses",
    401: "missing or wrong client key",
    404: "unknown model",
    405: "method not allowed (see the Allow header)",
    408: "the request body came too slowly",
    413: "request body over max_body_bytes",
    502: "upstream unreachable, broken off, or its answer over max_response_bytes",
    503: "model quarantined (drifting canaries), or strict audit unavailable",
    504: "upstream timeout",
}


def errors(envelope: type[BaseModel], *codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route: each status the proxy may answer, in its envelope."""
    return {code: {"model": envelope, "description": _WHY[code]} for code in codes}
