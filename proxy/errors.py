"""One error tree for everything the proxy itself refuses, rendered once, here, in the client's API's
envelope: OpenAI's, or Anthropic's for requests on ``/v1/messages`` (:func:`api_of`).

Upstream errors that carry a response (4xx/5xx) are *not* raised: they pass through unchanged.
These exceptions cover what the proxy decides: bad input, auth, routing, and upstreams that
could not be reached, did not answer in time or broke off. Every upstream failure is an
:class:`UpstreamError` whose ``kind`` is its metric label; aiohttp's exceptions are mapped onto
them once, in :func:`proxy.upstream.upstream_error`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import orjson
from starlette.responses import Response


class ProxyError(Exception):
    """Base of the tree: an HTTP status, and the four fields of OpenAI's error object."""

    status_code = 500
    type = "server_error"
    code: str | None = None
    close = False  # answer with `connection: close` (the rest of the request will not be read)

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def envelope(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body(self, api: Api = "openai") -> bytes:
        if api == "anthropic":
            return orjson.dumps(
                {"type": "error", "error": {"type": anthropic_type(self.status_code), "message": self.message}}
            )
        return error_body(self.message, type=self.type, code=self.code, param=self.param)


class BadRequest(ProxyError):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"


class Unauthorized(ProxyError):
    status_code = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class ModelNotFound(ProxyError):
    status_code = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(ProxyError):
    status_code = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(ProxyError):
    status_code = 405
    type = "invalid_request_error"
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.allow = sorted(set(allow))  # the ``Allow`` header RFC 9110 requires on a 405


class RequestTimeout(ProxyError):
    """The client was too slow with its headers or its body (``edge.*_timeout``, ``edge.body_min_rate``)."""

    status_code = 408
    type = "invalid_request_error"
    code = "request_timeout"
    close = True


class HeadersTooLarge(ProxyError):
    status_code = 431
    type = "invalid_request_error"
    code = "request_header_fields_too_large"


class ClientGone(ProxyError):
    """The client closed its connection before its request was read: counted as 499, never answered."""

    status_code = 499
    type = "invalid_request_error"
    code = "client_closed_request"


class PayloadTooLarge(ProxyError):
    status_code = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UpstreamError(ProxyError):
    """The upstream failed; ``kind`` says how (the ``kind`` label of ``refusal_guard_upstream_errors_total``)."""

    status_code = 502
    type = "upstream_error"
    code = "upstream_unreachable"
    kind = "connect"


class UpstreamUnreachable(UpstreamError):
    """Connection refused, DNS failure, TLS failure, connection reset before a response."""


class UpstreamTimeout(UpstreamError):
    """No connection, or no byte of the answer, within the configured timeout."""

    status_code = 504
    code = "upstream_timeout"
    kind = "timeout"


class UpstreamBrokeOff(UpstreamError):
    """The answer had begun and was cut off (a relayed stream counts it as ``stream_interrupted``)."""

    kind = "read"


class UpstreamResponseTooLarge(UpstreamError):
    """A non-streamed answer over ``max_response_bytes``: an error, never a silent cut."""

    code = "upstream_response_too_large"
    kind = "protocol"


class ServiceUnavailable(ProxyError):
    status_code = 503
    type = "server_error"
    code = "service_unavailable"


class AuditUnavailable(ServiceUnavailable):
    """Strict audit durability: the exchange's record could not be made durable, so no answer."""

    code = "audit_unavailable"

    def __init__(self) -> None:
        super().__init__("The audit log cannot record this exchange (strict durability).")


Api = Literal["openai", "anthropic"]

# Anthropic's error types by status (https://docs.anthropic.com/en/api/errors); other 4xx are invalid requests
_ANTHROPIC_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_type(status: int) -> str:
    """
    >>> anthropic_type(400), anthropic_type(404), anthropic_type(502)
    ('invalid_request_error', 'not_found_error', 'api_error')
    """
    return _ANTHROPIC_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")


def api_of(path: str) -> Api:
    """Whose envelope a request's errors come in: Anthropic's on ``/v1/messages`` and below.

    >>> api_of("/v1/messages"), api_of("/v1/messages/count_tokens"), api_of("/v1/chat/completions")
    ('anthropic', 'anthropic', 'openai')
    """
    return "anthropic" if path == "/v1/messages" or path.startswith("/v1/messages/") else "openai"


def error_body(message: str, *, type: str, code: str | None, param: str | None = None) -> bytes:
    """An OpenAI error envelope as bytes, for errors that are not raised (e.g. inside a stream)."""
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def error_response(exc: ProxyError, api: Api = "openai") -> Response:
    """The HTTP response for a raised error."""
    headers = {"connection": "close"} if exc.close else {}
    if isinstance(exc, MethodNotAllowed) and exc.allow:
        headers["allow"] = ", ".join(exc.allow)
    return Response(exc.body(api), status_code=exc.status_code, media_type="application/json", headers=headers)


def sse_error_event(exc: ProxyError, endpoint: str | None) -> bytes:
    """The SSE event that tells a client its stream broke off (the openai and anthropic SDKs raise on
    it): a ``data:`` line for chat and completions, an ``error`` event for the Responses and Messages APIs."""
    if endpoint == "messages":
        return b"event: error\ndata: " + exc.body("anthropic") + b"\n\n"
    if endpoint == "responses":
        return b"event: error\ndata: " + exc.body() + b"\n\n"
    return b"data: " + exc.body() + b"\n\n"


class StreamInterrupted(UpstreamError):
    """Inside a relayed stream: the event a client gets when its stream broke off."""

    code = "upstream_stream_interrupted"
