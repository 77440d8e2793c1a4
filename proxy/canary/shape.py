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

from proxy.canary.disguise import canary_body, canary_headers, style_of
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
    set). A model used only through Anthropic's Messages API gets its canaries in that API."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._templates: dict[str, WireRequest] = {}
        self._at: dict[str, float] = {}  # when each template's request arrived
        self._own: dict[str, deque[tuple[str, str]]] = {}  # per model: (benign canary, the model's answer)
        self._fresh: dict[str, WireRequest] = {}  # seen here since the state sync last took them
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
        req = WireRequest(ex.endpoint, list(ex.headers), ex.request, style_of(ex.request_body))
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
        self._keep(model, req, at)

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
        body = canary_body(t.body, model, text, rng, canary.system_prompt, anthropic=t.endpoint == "messages", own=own)
        return WireRequest(t.endpoint, canary_headers(t.headers, rng), body, t.style)
