"""The OpenAI-compatible relay: classified endpoints and the ``/v1/*`` pass-through."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import MethodNotAllowed
from proxy.exchange import ENDPOINTS
from proxy.routes.table import Endpoint, normalise
from proxy.service import ProxyService


def routes(service: ProxyService) -> list[Endpoint]:
    def classified(path: str) -> Endpoint:
        async def relay(request: Request) -> Response:
            return await service.forward(request, path)

        return Endpoint(f"/v1/{path}", ("POST",), relay)

    async def passthrough(request: Request, path: str) -> Response:
        path = normalise(path)
        if path in ENDPOINTS:  # POST is routed above; nothing else is allowed there
            raise MethodNotAllowed(f"Method {request.method} is not allowed on /v1/{path}.")
        return await service.forward(request, path)

    return [
        *(classified(path) for path in ENDPOINTS),
        Endpoint("/v1/{path}", ("GET", "POST", "PUT", "PATCH", "DELETE"), passthrough),
    ]
