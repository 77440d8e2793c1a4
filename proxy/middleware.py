"""Pure ASGI middleware (not ``BaseHTTPMiddleware``, which breaks contextvars and streaming)."""

from __future__ import annotations

import itertools
import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_VALID_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


class RequestIdMiddleware:
    """Accept a well-formed ``x-request-id`` or make one; expose it as ``scope["state"]["request_id"]``
    and echo it on the response. A malformed id (too long, odd characters) is replaced, never echoed,
    so it cannot inject headers or bloat logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # 32 hex characters: a random per-process prefix and a counter (uuid4 costs a syscall per request)
        prefix = os.urandom(8).hex()
        self._ids = (f"{prefix}{n:016x}".encode() for n in itertools.count(1))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
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

        await self.app(scope, receive, send_with_id)
