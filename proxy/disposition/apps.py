"""Which app a production request came from, as far as the request shows: the client's key id when
clients authenticate, else a short hash of the system prompt (apps differ by it), else ``-``.

Each model's disposition is learnt per app (:mod:`proxy.disposition.watch`): a new app brings its own
requests, whose refusals its own baseline learns, rather than a mix the model's old baseline never
saw. The upstream cannot move a request to another app. The hash is 32 bits of BLAKE2b: it tells
apps apart and keeps no system prompt in the state store.

>>> app_of("chat", {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}, None)
'system:1947d731'
>>> app_of("chat", {"messages": []}, "team-a")
'key:team-a'
"""

from __future__ import annotations

import hashlib
from typing import Any

from proxy.extract import system_text

NONE = "-"


def app_of(endpoint: str | None, request: dict[str, Any] | None, client_key_id: str | None) -> str:
    if client_key_id:
        return f"key:{client_key_id}"
    system = system_text(endpoint, request) if endpoint and request else None
    if not system:
        return NONE
    return "system:" + hashlib.blake2b(system.encode(), digest_size=4).hexdigest()
