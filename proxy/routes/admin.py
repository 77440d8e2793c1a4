"""Admin endpoints, behind ``admin_key_sha256``: put a model in quarantine, or clear it; accept the
model now served as its fingerprint's baseline (:mod:`proxy.fingerprint`; the leader applies it).

Sent to any replica, the decision goes to the state store at once (``stored`` in the answer says it
did; if the store is down it is kept and written when it returns) and every replica enforces it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from proxy.auth import ClientAuth
from proxy.canary.drift import DriftMonitor
from proxy.catalog import ModelCatalog
from proxy.errors import ModelNotFound, NotFound
from proxy.fingerprint import ModelFingerprint
from proxy.schemas import OpenAIError, errors
from proxy.settings import ClientKey, Settings
from proxy.state.sync import StateSync


def router(
    settings: Settings, drift: DriftMonitor, sync: StateSync, catalog: ModelCatalog, fingerprint: ModelFingerprint
) -> APIRouter:
    digest = settings.admin_key_sha256
    admin = ClientAuth([ClientKey(id="admin", sha256=digest)] if digest else [])

    async def operator(request: Request) -> None:
        """The admin key's check: the same headers as every route's (:class:`ClientAuth`)."""
        if not admin.enabled:
            raise NotFound("Admin endpoints are off: set admin_key_sha256 in the config.")
        await admin(request)

    api = APIRouter(
        prefix="/admin",
        tags=["admin"],
        dependencies=[Depends(operator)],
        responses=errors(OpenAIError, 401, 404),
    )

    @api.post("/fingerprint/{model:path}/baseline", summary="Accept the model now served as the fingerprint's baseline")
    async def baseline(model: str) -> Response:
        known = model in fingerprint.state()
        sync.outbox.rebaseline(model)  # in order with the observations: what follows is the new baseline
        stored = await sync.sync()
        return JSONResponse({"model": model, "rebaselined": known, "stored": stored})

    @api.post("/quarantine/{model:path}/clear", summary="Release a quarantined model")
    async def clear(model: str) -> Response:
        released = drift.release(model, by="operator")
        stored = await sync.sync()
        return JSONResponse(
            {"model": model, "released": released, "stored": stored, "state": drift.state()["models"].get(model)}
        )

    @api.post("/quarantine/{model:path}", summary="Quarantine a model on every replica")
    async def quarantine(model: str) -> Response:
        if model not in catalog.names() and model not in settings.canary.models:
            raise ModelNotFound(f"The model `{model[:200]}` is not configured.", param="model")
        drift.quarantine(model, "operator", by="operator")
        stored = await sync.sync()
        return JSONResponse({"model": model, "quarantined": True, "stored": stored})

    return api
