"""One error tree for everything the proxy itself refuses, rendered once in OpenAI's envelope.

Upstream errors that carry a response (4xx/5xx) are *not* raised: they pass through unchanged.
These exceptions cover what the proxy decides: bad input, auth, routing, and upstreams that
could not be reached or did not answer in time.
"""

from __future__ import annotations

from typing import Any

import orjson


class ProxyError(Exception):
    """Base of the tree: an HTTP status, and the four fields of OpenAI's error object."""

    status_code = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def envelope(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body(self) -> bytes:
        return orjson.dumps(self.envelope())


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


class PayloadTooLarge(ProxyError):
    status_code = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UpstreamUnreachable(ProxyError):
    """Connection refused, DNS failure, TLS failure, connection reset before a response."""

    status_code = 502
    type = "upstream_error"
    code = "upstream_unreachable"


class UpstreamTimeout(ProxyError):
    status_code = 504
    type = "upstream_error"
    code = "upstream_timeout"


class ServiceUnavailable(ProxyError):
    status_code = 503
    type = "server_error"
    code = "service_unavailable"


def error_body(message: str, *, type: str, code: str | None, param: str | None = None) -> bytes:
    """An OpenAI error envelope as bytes, for errors that are not raised (e.g. inside a stream)."""
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})
