"""``GET /v1/models`` and ``GET /v1/models/{model}``: the configured models, and what glob upstreams list."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from proxy.auth import ClientAuth
from proxy.catalog import ModelCatalog
from proxy.errors import ModelNotFound
from proxy.routes.table import Endpoint


def routes(catalog: ModelCatalog, auth: ClientAuth) -> list[Endpoint]:
    async def list_models(request: Request) -> Response:
        auth.check_headers(request.headers)
        return JSONResponse({"object": "list", "data": await catalog.refresh()})

    async def get_model(request: Request, model: str) -> Response:
        auth.check_headers(request.headers)
        for m in await catalog.refresh():
            if m["id"] == model:
                return JSONResponse(m)
        raise ModelNotFound(f"The model `{model[:200]}` does not exist or is not served here.", param="model")

    return [Endpoint("/v1/models", ("GET",), list_models), Endpoint("/v1/models/{model}", ("GET",), get_model)]
