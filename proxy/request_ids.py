"""Request ids: accepted from the client when well-formed, made otherwise, echoed on every response."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator

from starlette.types import Message, Scope, Send

_VALID_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


def counter_ids(prefix: str | None = None) -> Iterator[bytes]:
    """32 hex characters: a random per-process prefix and a counter (uuid4 costs a syscall per request).

    >>> next(counter_ids("00" * 8))
    b'00000000000000000000000000000001'
    """
    head = prefix if prefix is not None else os.urandom(8).hex()
    return (f"{head}{n:016x}".encode() for n in itertools.count(1))


class RequestIds:
    """Accept a well-formed ``x-request-id`` or make one; expose it as ``scope["state"]["request_id"]``
    and echo it on the response. A malformed id (too long, odd characters) is replaced, never echoed,
    so it cannot inject headers or bloat logs."""

    def __init__(self, ids: Iterator[bytes] | None = None) -> None:
        self._ids = ids if ids is not None else counter_ids()

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
