"""What canaries copy: the shape of each model's recent production requests."""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.exchange import Exchange
from proxy.settings import CanarySettings, is_glob

_SHAPED_PARAMS = (
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "n",
    "max_tokens",
    "max_completion_tokens",
)


class TrafficShape:
    """The system prompt and sampling parameters of each model's latest production chat request."""

    def __init__(self) -> None:
        self._shapes: dict[str, dict[str, Any]] = {}
        self.seen: list[str] = []  # models with production traffic, in order of first sight
        self.arrived = asyncio.Event()  # a model was seen for the first time (the scheduler checks it at once)

    def __call__(self, ex: Exchange) -> None:
        """A pipeline stage: remember the shape of a production chat request."""
        if ex.traffic != "production" or ex.endpoint != "chat" or not ex.request or ex.status >= 400:
            return
        shape = {k: ex.request[k] for k in _SHAPED_PARAMS if k in ex.request}
        system = [
            m
            for m in ex.request.get("messages") or []
            if isinstance(m, dict) and m.get("role") in ("system", "developer")
        ]
        if system:
            shape["system"] = system[0]
        label = ex.model_label
        if not is_glob(label) and label not in self.seen:
            self.seen.append(label)  # bounded: labels are config names, listed names or capped traffic names
            self.arrived.set()
        self._shapes[label] = shape
        if ex.model and ex.model != ex.model_label:
            self._shapes[ex.model] = shape

    def request(self, model: str, text: str, canary: CanarySettings) -> dict[str, Any]:
        """A chat request carrying ``text`` that looks like ``model``'s production traffic."""
        shape = dict(self._shapes.get(model, {}))
        system = shape.pop("system", None)
        if canary.system_prompt is not None:
            system = {"role": "system", "content": canary.system_prompt}
        body: dict[str, Any] = {
            "model": model,
            "messages": ([system] if system else []) + [{"role": "user", "content": text}],
        }
        body.update({k: v for k, v in shape.items() if k not in ("max_tokens", "max_completion_tokens", "n")})
        limit = min(
            v
            for v in (shape.get("max_tokens"), shape.get("max_completion_tokens"), canary.max_tokens)
            if isinstance(v, int)
        )
        body["max_completion_tokens" if "max_completion_tokens" in shape else "max_tokens"] = limit
        return body
