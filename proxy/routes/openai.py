"""The OpenAI-compatible relay: classified endpoints and the ``/v1/*`` pass-through (an allow-list:
``Settings.passthrough``)."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import MethodNotAllowed, NotFound
from proxy.exchange import ENDPOINTS
from proxy.routes.table import Endpoint
from proxy.service import ProxyService


def routes(service: ProxyService, allowed: Sequence[str]) -> list[Endpoint]:
    def classified(path: str) -> Endpoint:
        async def relay(request: Request) -> Response:
            return await service.forward(request, path)

        return Endpoint(f"/v1/{path}", ("POST",), relay)

    async def passthrough(request: Request, path: str) -> Response:
        if path in ENDPOINTS:  # POST is routed above; nothing else is allowed there
            raise MethodNotAllowed(f"Method {request.method} is not allowed on /v1/{path}.", allow=("POST",))
        if not any(fnmatch.fnmatchcase(path, pattern) for pattern in allowed):
            raise NotFound(f"/v1/{path[:200]} is not relayed (not in the pass-through allow-list).")
        return await service.forward(request, path)

    return [
        *(classified(path) for path in ENDPOINTS),
        Endpoint("/v1/{path}", ("GET", "POST", "PUT", "PATCH", "DELETE"), passthrough),
    ]
