"""Admin endpoints, behind ``admin_key_sha256``: put a model in quarantine, or clear it.

Sent to any replica, the decision goes to the state store at once (``stored`` in the answer says it
did; if the store is down it is kept and written when it returns) and every replica enforces it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from proxy.auth import ClientAuth
from proxy.canary.drift import DriftMonitor
from proxy.catalog import ModelCatalog
from proxy.errors import ModelNotFound, NotFound
from proxy.routes.table import Endpoint
from proxy.settings import ClientKey, Settings
from proxy.state.sync import StateSync


def routes(settings: Settings, drift: DriftMonitor, sync: StateSync, catalog: ModelCatalog) -> list[Endpoint]:
    digest = settings.admin_key_sha256
    admin = ClientAuth([ClientKey(id="admin", sha256=digest)] if digest else [])

    def check(request: Request) -> None:
        if not admin.enabled:
            raise NotFound("Admin endpoints are off: set admin_key_sha256 in the config.")
        admin.check_headers(request.headers)

    async def clear(request: Request, model: str) -> Response:
        check(request)
        released = drift.release(model, by="operator")
        stored = await sync.sync()
        return JSONResponse(
            {"model": model, "released": released, "stored": stored, "state": drift.state()["models"].get(model)}
        )

    async def quarantine(request: Request, model: str) -> Response:
        check(request)
        if model not in catalog.names() and model not in settings.canary.models:
            raise ModelNotFound(f"The model `{model[:200]}` is not configured.", param="model")
        drift.quarantine(model, "operator", by="operator")
        stored = await sync.sync()
        return JSONResponse({"model": model, "quarantined": True, "stored": stored})

    return [
        Endpoint("/admin/quarantine/{model}/clear", ("POST",), clear),
        Endpoint("/admin/quarantine/{model}", ("POST",), quarantine),
    ]
