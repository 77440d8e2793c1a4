"""Pure ASGI middleware (not ``BaseHTTPMiddleware``, which breaks contextvars and streaming)."""

from __future__ import annotations

import itertools
import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_VALID_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


class RequestIds:
    """Accept a well-formed ``x-request-id`` or make one; expose it as ``scope["state"]["request_id"]``
    and echo it on the response. A malformed id (too long, odd characters) is replaced, never echoed,
    so it cannot inject headers or bloat logs."""

    def __init__(self) -> None:
        # 32 hex characters: a random per-process prefix and a counter (uuid4 costs a syscall per request)
        prefix = os.urandom(8).hex()
        self._ids = (f"{prefix}{n:016x}".encode() for n in itertools.count(1))

    def tag(self, scope: Scope, send: Send) -> Send:
        """Set the request id in ``scope`` and return a ``send`` that puts it on the response."""
        rid = b""
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                rid = v
                break
        if not _VALID_ID.match(rid):
            rid = next(self._ids)
        scope.setdefault("state", {})["request_id"] = rid.decode()
        header = (b"x-request-id", rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                headers.append(header)
                message["headers"] = headers
            await send(message)

        return send_with_id


class RequestIdMiddleware:
    """:class:`RequestIds` as middleware, for the routes that go through FastAPI."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, self._ids.tag(scope, send))
