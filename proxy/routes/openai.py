"""The OpenAI- and Anthropic-compatible relay: the classified endpoints and the ``/v1/*`` pass-through
(an allow-list: ``Settings.passthrough``), all into :class:`proxy.service.ProxyService`.

The classified routes take the raw request (no body parameter: FastAPI reads nothing, the service
reads and relays the bytes); their bodies are documented from :mod:`proxy.schemas`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from proxy.auth import ClientAuth
from proxy.errors import MethodNotAllowed, NotFound
from proxy.exchange import ENDPOINTS
from proxy.schemas import REQUESTS, AnthropicError, OpenAIError, errors
from proxy.service import ProxyService
from proxy.web import Lane, body_of

_RELAYED: dict[int | str, dict[str, Any]] = {
    200: {"description": "the upstream's answer, relayed unchanged (SSE when `stream`)"}
}


def fast_lane(service: ProxyService, auth: ClientAuth) -> dict[str, Lane]:
    """``POST`` on the classified endpoints as plain handlers, which :class:`proxy.web.Edge` calls
    before FastAPI: the same client-key check (:class:`ClientAuth`), the same service, the same
    errors. Why: measured in one run, FastAPI's dependency solving and request handling in front of
    these routes cost a quarter of the proxy's throughput (0.74-0.78 of the requests/s at 1, 8 and
    32 concurrent, +0.2 ms at p50: ``bench/proxy.py --against``, docs/performance.md). The FastAPI
    routes below stay the documented contract (OpenAPI) and answer every other method."""

    def lane(path: str) -> Lane:
        async def relay(request: Request) -> Response:
            return await service.forward(request, path, auth.check_headers(request.headers))

        return relay

    return {f"/v1/{path}": lane(path) for path in ENDPOINTS}


def router(service: ProxyService, auth: ClientAuth, allowed: Sequence[str]) -> APIRouter:
    api = APIRouter(tags=["relay"])
    key_of = Depends(auth)  # the client's key id

    def classified(path: str, endpoint: str) -> None:
        async def relay(request: Request, key: str | None = key_of) -> Response:
            return await service.forward(request, path, key)

        envelope = AnthropicError if endpoint == "messages" else OpenAIError
        api.add_api_route(
            f"/v1/{path}",
            relay,
            methods=["POST"],
            name=endpoint,
            summary=f"{REQUESTS[endpoint].__doc__}, classified",
            openapi_extra=body_of(endpoint),
            responses={**_RELAYED, **errors(envelope, 400, 401, 404, 408, 413, 502, 503, 504)},
        )

    for path, endpoint in ENDPOINTS.items():
        classified(path, endpoint)

    async def passthrough(request: Request, path: str, key: str | None = key_of) -> Response:
        if path in ENDPOINTS:  # POST is routed above; nothing else is allowed there
            raise MethodNotAllowed(f"Method {request.method} is not allowed on /v1/{path}.", allow=("POST",))
        if not any(fnmatch.fnmatchcase(path, pattern) for pattern in allowed):
            raise NotFound(f"/v1/{path[:200]} is not relayed (not in the pass-through allow-list).")
        return await service.forward(request, path, key)

    api.add_api_route(
        "/v1/{path:path}",
        passthrough,
        methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,  # the upstream's own API, relayed as it is
    )
    return api
