"""The front door: a FastAPI app over the routers of :mod:`proxy.routes`, with one path policy, request
ids, and every error in the client's API's envelope.

FastAPI gives the routing (405 with ``Allow``), the lifespan, dependencies (the client-key check,
:class:`proxy.auth.ClientAuth`) and the OpenAPI document, generated from the routes. The classified
endpoints take the raw request and relay its bytes; they declare no body parameter, so FastAPI never
reads or parses a body (their request schemas are documented from :mod:`proxy.schemas`). ``POST`` on
them takes a fast lane past FastAPI (:class:`Edge`; why, with the figures:
:func:`proxy.routes.openai.fast_lane`): same check, same service, same errors.

Errors are rendered in one place: what the proxy raises (:class:`~proxy.errors.ProxyError`), what
routing raises (404, 405), request validation (400), and, as a last resort, a bug of ours (logged
with its traceback, answered without details).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.errors import BadRequest, MethodNotAllowed, NotFound, ProxyError, api_of, error_response
from proxy.logs import logger
from proxy.paths import normalise
from proxy.request_ids import RequestIds
from proxy.schemas import REQUESTS

# FastAPI's own OpenTelemetry spans stay off even where global providers are set: the proxy's spans
# (proxy.telemetry) are the ones that follow the GenAI conventions, and two SERVER spans per request
# would split each trace.
NO_FRAMEWORK_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
Rejected = Callable[[Request, ProxyError], None]  # told of every error answered before a handler ran
Lane = Callable[[Request], Awaitable[Response]]  # a hot route Edge calls itself (proxy.routes.openai.fast_lane)


class Edge:
    """Pure ASGI, outermost: the request id, the path policy (:mod:`proxy.paths`) before routing, the
    fast lane (``POST`` on a hot path goes to its handler, not through FastAPI), and the last-resort
    answer to a bug of ours while no response has started."""

    def __init__(
        self,
        app: ASGIApp,
        ids: Iterator[bytes] | None = None,
        fast: Mapping[str, Lane] | None = None,
        answer: Callable[[Request, ProxyError], Response] | None = None,
    ) -> None:
        self.app = app
        self._ids = RequestIds(ids)
        self.fast = dict(fast or {})
        self.answer = answer or (lambda request, exc: error_response(exc, api_of(request.url.path)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._ids.tag(scope, send)
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            scope["path"] = normalise(scope.get("raw_path") or scope["path"].encode())
        except ProxyError as exc:
            await error_response(exc, api_of(scope["path"]))(scope, receive, send)
            return
        try:
            lane = self.fast.get(scope["path"]) if scope["method"] == "POST" else None
            if lane is None:
                await self.app(scope, receive, tracked)
            else:
                request = Request(scope, receive)
                try:
                    response = await lane(request)
                except ProxyError as exc:  # the client key: answered as the exception handler would
                    response = self.answer(request, exc)
                await response(scope, receive, tracked)
        except Exception:
            if started:
                raise
            logger.exception("unhandled_error", path=scope["path"])
            error = ProxyError("The proxy failed to handle this request.", code="internal_error")
            await error_response(error, api_of(scope["path"]))(scope, receive, send)


def front_door(
    routers: Iterable[APIRouter],
    lifespan: Callable[[Any], AbstractAsyncContextManager[None]],
    *,
    ids: Iterator[bytes] | None = None,
    rejected: Rejected | None = None,
    fast: Mapping[str, Lane] | None = None,
    version: str = "1",
) -> FastAPI:
    """The app: ``routers`` included in order, errors in the envelope, ``/openapi.json`` from the routes."""
    app = FastAPI(
        title="refusal-guard",
        version=version,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
        telemetry=NO_FRAMEWORK_TELEMETRY,
    )
    for router in routers:
        app.include_router(router)

    def answer(request: Request, exc: ProxyError) -> Response:
        if rejected is not None:
            rejected(request, exc)
        return error_response(exc, api_of(request.url.path))

    async def proxy_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProxyError)
        return answer(request, exc)

    async def routing_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.scope["path"][:200]
        if exc.status_code == 405:
            allow = allowed(app, request.scope)
            return answer(
                request, MethodNotAllowed(f"Method {request.method[:20]} is not allowed on {path}.", allow=allow)
            )
        if exc.status_code == 404:
            return answer(request, NotFound(f"No route for {path}."))
        error = ProxyError(str(exc.detail))
        error.status_code = exc.status_code
        return answer(request, error)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:])
        return answer(request, BadRequest(f"`{where}`: {first.get('msg', 'invalid')}.", param=where or None))

    app.add_exception_handler(ProxyError, proxy_error)
    app.add_exception_handler(HTTPException, routing_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_middleware(Edge, ids=ids, fast=fast, answer=answer)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def allowed(app: FastAPI, scope: Scope) -> set[str]:
    """Every method some route answers on this path (Starlette's 405 names only the first route's)."""
    return {
        method
        for method in METHODS
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in app.router.routes)
    }


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the request schemas the classified routes name by ``$ref``."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
        _, defs = models_json_schema(
            [(m, "validation") for m in REQUESTS.values()], ref_template="#/components/schemas/{model}"
        )
        doc.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
        app.openapi_schema = doc
    return app.openapi_schema


def add_get(api: APIRouter, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
    """A GET route, and HEAD on it (answered as GET is, not documented twice)."""
    api.add_api_route(path, endpoint, methods=["GET"], **kwargs)
    api.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)


def body_of(endpoint: str) -> dict[str, Any]:
    """``openapi_extra`` of a classified route: its request body, documented (never parsed by FastAPI)."""
    ref = {"$ref": f"#/components/schemas/{REQUESTS[endpoint].__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}
