"""``GET /v1/models`` and ``GET /v1/models/{model}``: the configured models, and what glob upstreams list."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import JSONResponse, Response

from proxy.auth import ClientAuth
from proxy.catalog import ModelCatalog
from proxy.errors import ModelNotFound
from proxy.schemas import OpenAIError, errors
from proxy.web import add_get


def router(catalog: ModelCatalog, auth: ClientAuth) -> APIRouter:
    api = APIRouter(tags=["models"], dependencies=[Depends(auth)], responses=errors(OpenAIError, 401))

    async def list_models() -> Response:
        return JSONResponse({"object": "list", "data": await catalog.refresh()})

    add_get(api, "/v1/models", list_models, summary="The models served here (an OpenAI model list)")

    async def get_model(model: str) -> Response:
        for m in await catalog.refresh():
            if m["id"] == model:
                return JSONResponse(m)
        raise ModelNotFound(f"The model `{model[:200]}` does not exist or is not served here.", param="model")

    add_get(api, "/v1/models/{model:path}", get_model, summary="One model", responses=errors(OpenAIError, 404))

    return api
