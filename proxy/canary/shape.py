"""What canaries copy: each model's most recent production conversation request, in the API it came in
(OpenAI's chat completions or Anthropic's Messages; see :mod:`proxy.canary.disguise`), and the
model's own recent answers to benign canaries, which become the earlier turns of later canaries."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.audit.record import secret_header
from proxy.canary.disguise import DROPPED, ID_BODY_KEYS, canary_body, canary_headers, regenerate, style_of
from proxy.canary.ids import RecurringIds
from proxy.disposition.apps import app_of
from proxy.exchange import Exchange
from proxy.extract import sole_text
from proxy.settings import CanarySettings, is_glob


@dataclass(frozen=True, slots=True)
class WireRequest:
    """A conversation request as it goes on the wire: its API (``chat`` or ``messages``), headers, body,
    and how the body is serialised. The latest production request of each model is kept as one; a
    canary is built as another."""

    endpoint: str
    headers: list[tuple[str, str]]
    body: dict[str, Any]
    style: tuple[tuple[str, str], bool]
    withheld: frozenset[str] = frozenset()  # headers whose values the store does not hold (secret-bearing)

    @property
    def path(self) -> str:
        """Below ``/v1``: where the upstream is sent this request."""
        return "/messages" if self.endpoint == "messages" else "/chat/completions"

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True


SDK_STYLE: tuple[tuple[str, str], bool] = ((",", ":"), False)  # the openai SDK: compact, UTF-8
_CONVERSATIONS = frozenset({"chat", "messages"})


class TrafficShape:
    """A pipeline stage: the latest production conversation request of each model (by label: a bounded
    set). A model used only through Anthropic's Messages API gets its canaries in that API.

    Headers are kept as the relay forwarded them, credentials aside. Those that may carry a secret
    (``openai-organization``, ``*token*``: :func:`proxy.audit.record.secret_header`) go upstream on
    every production request, so a canary without them would stand out; they stay in this process (the
    store gets their names only), and a request adopted from another replica takes this process's latest
    value of each, or goes without the header when it has none."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._templates: dict[str, WireRequest] = {}
        self._at: dict[str, float] = {}  # when each template's request arrived
        self._own: dict[str, deque[tuple[str, str]]] = {}  # per model: (benign canary, the model's answer)
        self._fresh: dict[str, WireRequest] = {}  # seen here since the state sync last took them
        self._withheld: dict[str, str] = {}  # secret-bearing header -> its latest value here (never stored)
        self._ids = RecurringIds()  # production's user and session ids, which canaries reuse as it does
        self.seen: list[str] = []  # models with production traffic, in order of first sight
        self.arrived = asyncio.Event()  # a model was seen for the first time (the scheduler checks it at once)

    def __call__(self, ex: Exchange) -> None:
        if ex.traffic == "canary":
            self._remember(ex)
            return
        if ex.traffic != "production" or ex.endpoint not in _CONVERSATIONS or not ex.request or ex.status >= 400:
            return
        label = ex.model_label
        if is_glob(label):
            return
        headers = [(k, v) for k, v in ex.forwarded or ex.headers if k not in DROPPED]
        for k, v in headers:
            if secret_header(k) and (k in self._withheld or len(self._withheld) < 32):
                self._withheld[k] = v
        req = WireRequest(ex.endpoint, headers, ex.request, style_of(ex.request_body))
        self._fresh[label] = req
        self._keep(label, req, self.clock())

    def _remember(self, ex: Exchange) -> None:
        """A benign canary the model answered: a real exchange with it, for later canaries' earlier turns."""
        if (ex.canary or {}).get("expected") != "compliance" or ex.status >= 400 or ex.response_truncated:
            return
        if not ex.verdicts or ex.verdicts[0].refused or ex.endpoint not in _CONVERSATIONS:
            return
        answer = sole_text(ex.endpoint, ex.response, ex.stream)
        users = [m for m in (ex.request or {}).get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
        asked = users[-1].get("content") if users else None
        if answer and isinstance(asked, str):
            self._own.setdefault(ex.model_label, deque(maxlen=32)).append((asked, answer))

    def _keep(self, label: str, req: WireRequest, at: float) -> None:
        if label not in self.seen:
            self.seen.append(label)  # bounded: labels are config names, listed names or capped traffic names
            self.arrived.set()
        self._templates[label] = req
        self._at[label] = at
        self._ids.observe(_ids_of(label, req), req.body, ID_BODY_KEYS)

    def take_fresh(self) -> dict[str, WireRequest]:
        """The latest request of each model seen by this process since the last call (to publish)."""
        fresh, self._fresh = self._fresh, {}
        return fresh

    def adopt(self, model: str, req: WireRequest, at: float, *, prefer_local: bool = False) -> None:
        """A production request of ``model`` that arrived on another replica (from the state store): kept
        when it is newer than the one this process saw, or when this process has none. ``prefer_local``
        (the store keeps no texts under the audit's redacting privacy modes) keeps a local one whatever
        its age, since it still has its system prompt."""
        if model in self._templates and (prefer_local or self._at.get(model, 0.0) >= at):
            return
        headers = [(k, self._withheld.get(k, "") if k in req.withheld else v) for k, v in req.headers]
        kept = [(k, v) for k, v in headers if v or k not in req.withheld]
        self._keep(model, WireRequest(req.endpoint, kept, req.body, req.style), at)

    def warming(self, model: str) -> bool:
        """Whether ``model``'s production sends earlier turns that its canaries cannot carry yet: no
        benign canary of this process has been answered, so a canary would open the conversation alone."""
        t = self._templates.get(model)
        if t is None or model in self._own:
            return False
        messages = t.body.get("messages")
        turns = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
        return sum(m.get("role") in ("user", "assistant") for m in turns) > 1

    def has(self, model: str) -> bool:
        """Whether ``model`` has had a production conversation request to copy."""
        return model in self._templates

    def request(self, model: str, text: str, canary: CanarySettings, rng: random.Random) -> WireRequest:
        """A request carrying ``text`` that looks like ``model``'s production traffic, in its API."""
        t = self._templates.get(model)
        if t is None:  # no production traffic yet: the openai SDK's headers and layout, streamed
            body = canary_body(None, model, text, rng, canary.system_prompt)
            body["stream"] = True
            return WireRequest("chat", canary_headers(None, rng), body, SDK_STYLE)
        own = self._own.get(model, ())

        def ids(key: str, like: Any) -> Any:  # the copied request's app's users, not another app's
            return self._ids.draw(_ids_of(model, t), key, like, rng, regenerate)

        anthropic = t.endpoint == "messages"
        body = canary_body(t.body, model, text, rng, canary.system_prompt, anthropic=anthropic, own=own, ids=ids)
        return WireRequest(t.endpoint, canary_headers(t.headers, rng), body, t.style)


def _ids_of(model: str, req: WireRequest) -> str:
    """Whose ids a request carries: its model's, per app as its system prompt shows it (the client key
    is not in a stored request), so a canary never pairs one app's system prompt with another's users."""
    return f"{model} {app_of(req.endpoint, req.body, None)}"
