"""What an answer says about itself: its id, the model that says it answered, ``system_fingerprint``,
finish reasons and token usage, from OpenAI's or Anthropic's body, streamed or not.

Read by the traces (:mod:`proxy.telemetry`) and the behavioural fingerprint (:mod:`proxy.fingerprint`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(slots=True)
class Facts:
    id: str | None = None
    model: str | None = None
    system_fingerprint: str | None = None
    finish_reasons: list[str] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None


def _objects(body: bytes, stream: bool) -> list[Any]:
    if not stream:
        try:
            return [orjson.loads(body)]
        except orjson.JSONDecodeError:
            return []
    out = []
    for line in body.split(b"\n"):
        if line.startswith(b"data:") and line[5:].strip() not in (b"", b"[DONE]"):
            try:
                out.append(orjson.loads(line[5:]))
            except orjson.JSONDecodeError:
                continue
    return out


def facts(body: bytes, stream: bool) -> Facts:
    """
    >>> facts(b'{"id": "c1", "model": "m-1", "system_fingerprint": "fp_1", "choices": [{"finish_reason": "stop"}],'
    ...       b' "usage": {"prompt_tokens": 9, "completion_tokens": 3}}', stream=False)
    Facts(id='c1', model='m-1', system_fingerprint='fp_1', finish_reasons=['stop'], input_tokens=9, output_tokens=3)
    """
    out = Facts()
    for obj in _objects(body, stream):
        if not isinstance(obj, dict):
            continue
        for part in (obj, obj.get("message"), obj.get("response"), obj.get("delta")):  # Anthropic, Responses
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("id"), str) and out.id is None:
                out.id = part["id"]
            if isinstance(part.get("model"), str) and out.model is None:
                out.model = part["model"]
            if isinstance(part.get("system_fingerprint"), str) and out.system_fingerprint is None:
                out.system_fingerprint = part["system_fingerprint"]
            if isinstance(part.get("stop_reason"), str):
                out.finish_reasons.append(part["stop_reason"])
            usage = part.get("usage")
            if isinstance(usage, dict):
                for key in ("prompt_tokens", "input_tokens"):
                    if isinstance(usage.get(key), int) and usage[key] > 0:
                        out.input_tokens = usage[key]
                for key in ("completion_tokens", "output_tokens"):
                    if isinstance(usage.get(key), int) and usage[key] > 0:
                        out.output_tokens = usage[key]
        for choice in obj.get("choices") or ():
            if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
                out.finish_reasons.append(choice["finish_reason"])
    out.finish_reasons = list(dict.fromkeys(out.finish_reasons))
    return out
