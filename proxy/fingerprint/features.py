"""What the fingerprint reads off one exchange: text features of the request and the answer, the
token counts the answer reports, and the identities it states (:func:`observation`).

Features are computed with ``str`` methods, not regexes: this runs in the event loop, on the answers
each replica samples (:mod:`proxy.fingerprint.stage`).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

from proxy.exchange import Exchange
from proxy.extract import sole_text
from proxy.facts import facts
from proxy.fingerprint.production import shape_of
from proxy.fingerprint.twosample import sketch
from proxy.state.outbox import FINGERPRINT

_NOT_SYMBOLS = str.maketrans("", "", string.ascii_letters + string.digits + string.whitespace)  # deleted


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts / blocks
        return " ".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return ""


def text_features(texts: Sequence[str], messages: int) -> list[float]:
    """What a token count follows from: a constant, the messages (template), characters, words,
    symbols, and the bytes beyond one per character in UTF-8 (non-Latin text tokenizes otherwise).

    >>> text_features(["Hi, you!"], 1), text_features(["café"], 1)[-1]
    ([1.0, 1.0, 8.0, 2.0, 2.0, 0.0], 1.0)
    """
    joined = "\n".join(texts)
    non_ascii = 0 if joined.isascii() else len(joined.encode("utf-8", "surrogatepass")) - len(joined)
    words = len(joined.split())  # str methods, not regexes: this runs on every exchange, in the event loop
    symbols = len(joined.translate(_NOT_SYMBOLS))
    return [1.0, float(messages), float(len(joined)), float(words), float(symbols), float(non_ascii)]


def request_features(endpoint: str, request: dict[str, Any]) -> list[float] | None:
    """The request's text as the model's template sees it: every message (and Anthropic's ``system``)."""
    if endpoint in ("chat", "messages"):
        msgs = [m for m in request.get("messages") or [] if isinstance(m, dict)]
        texts = [_text(m.get("content")) for m in msgs]
        if endpoint == "messages" and request.get("system"):
            texts.insert(0, _text(request["system"]))
            return text_features(texts, len(msgs) + 1)
        return text_features(texts, len(msgs))
    if endpoint in ("completions", "responses"):
        prompt = request.get("prompt") if endpoint == "completions" else request.get("input")
        return text_features([_text(prompt)], 1) if isinstance(prompt, str | list) else None
    return None


def answer_text(ex: Exchange) -> str | None:
    """One choice's text, as ``completion_tokens`` counts it; none for tool calls, several choices or a cut answer."""
    return None if ex.response_truncated else sole_text(ex.endpoint or "chat", ex.response, ex.stream)


def sampling(request: dict[str, Any]) -> str:
    """The sampling setting answers are drawn under: only answers under the same one are compared.

    >>> sampling({"temperature": 0.7}), sampling({})
    ('t=0.7 p=None', 't=None p=None')
    """
    return f"t={request.get('temperature')} p={request.get('top_p')}"


def observation(ex: Exchange) -> list[Any]:
    """The event a replica publishes for the leader's fingerprint (:data:`FINGERPRINT`); a canary's
    carries its answer's sketch for the statistical tier (:mod:`proxy.fingerprint.twosample`), a
    production answer its shape for the production tier (:mod:`proxy.fingerprint.production`)."""
    said = facts(ex.response, ex.stream)
    request = ex.request or {}
    prompt = request_features(ex.endpoint or "chat", request) if said.input_tokens is not None else None
    text = answer_text(ex)
    answer = text_features([text], 1) if text is not None and said.output_tokens is not None else None
    point = sketch(text) if text is not None and ex.traffic == "canary" else None
    shape = None
    if text is not None and ex.traffic == "production":
        finish = said.finish_reasons[0] if said.finish_reasons else None
        shape = shape_of(text, finish, said.output_tokens, ex.duration, ex.first_chunk)
    return [
        FINGERPRINT, ex.model_label, ex.endpoint, prompt, said.input_tokens, answer, said.output_tokens,
        said.model, said.system_fingerprint, point, sampling(request), shape,
    ]  # fmt: skip
