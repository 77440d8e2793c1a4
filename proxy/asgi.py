"""The ASGI application: lifespan, request ids, the dispatch table, and errors rendered once.

No framework router or middleware stack between the server and a handler: every request is
tagged with its id, matched once in a :class:`~proxy.routes.table.RouteTable`, and whatever a
handler raises is answered in the error envelope (a bug of ours is logged with its traceback and
answered without details).
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from types import SimpleNamespace
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from proxy.errors import ProxyError, api_of, error_response
from proxy.logs import logger
from proxy.paths import normalise
from proxy.request_ids import RequestIds
from proxy.routes.table import RouteTable


class Lifespan(Protocol):
    def __call__(self, app: GuardApp) -> AbstractAsyncContextManager[None]: ...


class GuardApp:
    """An ASGI app over a route table; ``state`` holds the parts tests and operators look at."""

    title = "refusal-guard"

    def __init__(self, table: RouteTable, lifespan: Lifespan, *, ids: Iterator[bytes] | None = None) -> None:
        self.table = table
        self.lifespan = lifespan
        self.state: Any = SimpleNamespace()
        self._ids = RequestIds(ids)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        send = self._ids.tag(scope, send)
        try:
            scope["path"] = normalise(scope.get("raw_path") or scope["path"].encode())  # proxy.paths
            handler, params = self.table.match(scope["method"], scope["path"])
            response = await handler(Request(scope, receive), **params)
        except ProxyError as exc:
            response = error_response(exc, api_of(scope["path"]))
        except Exception:
            response = internal_error(scope["path"])
        await response(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        started = False
        await receive()  # lifespan.startup
        try:
            async with self.lifespan(self):
                await send({"type": "lifespan.startup.complete"})
                started = True
                await receive()  # lifespan.shutdown
        except BaseException:
            failed = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
            await send({"type": failed, "message": traceback.format_exc()})
            raise
        await send({"type": "lifespan.shutdown.complete"})


def internal_error(path: str) -> Response:
    """A bug of ours: logged with its traceback, answered in the envelope, never with details."""
    logger.exception("unhandled_error", path=path)
    return error_response(ProxyError("The proxy failed to handle this request.", code="internal_error"), api_of(path))
