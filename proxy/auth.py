"""Client API keys: stored as SHA-256 digests, compared in constant time, never forwarded upstream."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from starlette.requests import Request

from proxy.errors import Unauthorized
from proxy.settings import ClientKey


class ClientAuth:
    """Checks the key a client presents (``Authorization: Bearer``, ``api-key``, or Anthropic's
    ``x-api-key``) against the config.

    With no keys configured every request is let in and the key id is ``None``. An instance is the
    FastAPI dependency of every ``/v1`` route (``Depends(auth)``): it yields the key's id.
    """

    def __init__(self, keys: Sequence[ClientKey]) -> None:
        self._keys = [(k.id, bytes.fromhex(k.sha256)) for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    async def __call__(self, request: Request) -> str | None:
        return self.check_headers(request.headers)

    def check_headers(self, headers: Mapping[str, str]) -> str | None:
        """:meth:`check` on the headers every route reads the key from, in this order of precedence:
        ``Authorization: Bearer``, then ``api-key`` (Azure's), then ``x-api-key`` (Anthropic's)."""
        return self.check(headers.get("authorization"), headers.get("api-key") or headers.get("x-api-key"))

    def check(self, authorization: str | None, api_key: str | None) -> str | None:
        """The id of the matching key; raises :class:`Unauthorized` otherwise."""
        if not self._keys:
            return None
        presented = api_key
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                presented = value.strip()
        if not presented:
            raise Unauthorized("Missing API key. Send it as `Authorization: Bearer <key>` (or `x-api-key: <key>`).")
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found: str | None = None
        for key_id, stored in self._keys:  # no early exit: the time taken does not depend on which key matched
            if hmac.compare_digest(digest, stored):
                found = key_id
        if found is None:
            raise Unauthorized("Incorrect API key provided.")
        return found
