"""Canaries that look like the model's production requests on the wire.

For each target model, a canary copies its most recent production chat request (kept by
:class:`~proxy.canary.shape.TrafficShape`): the header set the relay forwarded, in its order, the
JSON body's keys in their order and its serialisation (separators, escaping), every sampling
parameter, ``max_tokens`` and ``stream`` included, and the conversation's shape (a system prompt,
earlier turns, content as a string or as parts). What is never copied: credentials (the upstream
client sends the proxy's own key), cookies, per-request and trace ids (regenerated in the same
format), and production content: earlier turns are the model's own earlier exchanges with benign
canaries (the system prompt is the deployment's own configuration and is kept, unless
``canary.system_prompt`` says otherwise). User and session ids in the body recur as production's do
(:mod:`proxy.canary.ids`). A model with no production traffic yet gets the official openai SDK's
header set and body layout.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable, Sequence
from typing import Any

# what the openai Python SDK sends (captured from openai 3.57.0), for a model with no traffic yet
SDK_HEADERS: tuple[tuple[str, str], ...] = (
    ("accept", "application/json"),
    ("content-type", "application/json"),
    ("user-agent", "OpenAI/Python 3.57.0"),
    ("x-stainless-lang", "python"),
    ("x-stainless-package-version", "3.57.0"),
    ("x-stainless-os", "Linux"),
    ("x-stainless-arch", "x64"),
    ("x-stainless-runtime", "CPython"),
    ("x-stainless-runtime-version", "3.11.7"),
    ("x-stainless-async", "false"),
    ("x-stainless-retry-count", "0"),
    ("x-stainless-read-timeout", "600"),
)
# never copied: credentials and cookies (the upstream client adds the proxy's own key), and what the
# proxy or the HTTP client computes per request
DROPPED = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "cookie",
        "host",
        "content-length",
        "connection",
        "transfer-encoding",
        "expect",
        "x-refusal-guard-truncated",  # the audit's mark where production's headers were cut
    }
)
# per-request ids: copied in format, never in value
_ID_HEADERS = frozenset(
    {
        "x-request-id",
        "request-id",
        "x-correlation-id",
        "traceparent",
        "tracestate",
        "x-amzn-trace-id",
        "x-cloud-trace-context",
        "uber-trace-id",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-datadog-trace-id",
        "x-datadog-parent-id",
        "idempotency-key",
        "x-stainless-idempotency-key",
    }
)
ID_BODY_KEYS = frozenset({"user", "metadata", "prompt_cache_key", "safety_identifier", "session_id", "conversation_id"})


def regenerate(value: Any, rng: random.Random) -> Any:
    """A new value in the format of ``value``: hex stays hex, digits digits, letters letters, the
    separators where they were; containers keep their keys.

    >>> r = random.Random(0)
    >>> old = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    >>> new = regenerate(old, r)
    >>> new != old and [len(p) for p in new.split("-")] == [len(p) for p in old.split("-")]
    True
    """
    if isinstance(value, dict):
        return {k: regenerate(v, rng) for k, v in value.items()}
    if isinstance(value, list):
        return [regenerate(v, rng) for v in value]
    if isinstance(value, bool) or not isinstance(value, str | int):
        return value
    if isinstance(value, int):
        return rng.randrange(10 ** max(1, len(str(abs(value))) - 1), 10 ** len(str(abs(value))))
    hexy = all(c in string.hexdigits or not c.isalnum() for c in value)
    out = []
    for c in value:
        if c.isdigit() or (hexy and c in string.hexdigits):
            out.append(rng.choice(string.digits if not hexy else "0123456789abcdef"))
        elif c.isalpha():
            out.append(rng.choice(string.ascii_uppercase if c.isupper() else string.ascii_lowercase))
        else:
            out.append(c)
    return "".join(out)


def canary_headers(production: Sequence[tuple[str, str]] | None, rng: random.Random) -> list[tuple[str, str]]:
    """The headers of a canary: production's as the relay forwarded them, in order, ids regenerated,
    credentials dropped."""
    if not production:
        return list(SDK_HEADERS)
    return [(k, regenerate(v, rng) if k in _ID_HEADERS else v) for k, v in production if k not in DROPPED]


def _content(like: Any, text: str) -> Any:
    """``text`` as a message content in the form ``like`` has: a string, or a list of text parts."""
    if isinstance(like, list):
        parts = [p for p in like if isinstance(p, dict) and p.get("type") == "text"]
        return [{**(parts[0] if parts else {"type": "text"}), "text": text}]
    return text


def canary_messages(
    production: list[Any], text: str, rng: random.Random, system: Any, own: Sequence[tuple[str, str]] = ()
) -> list[Any]:
    """Production's conversation shape with earlier turns and ``text`` as the last user turn. The
    earlier turns are real exchanges with this model (``own``: benign canaries and the answers it
    gave them), so an assistant turn is the model's own words, as in a real app, never a fixed list
    an upstream could learn; with none yet, the conversation opens at ``text`` (the scheduler holds
    harmful canaries meanwhile: :meth:`proxy.canary.scheduler.CanaryScheduler.held`)."""
    turns = [m for m in production if isinstance(m, dict) and m.get("role") in ("user", "assistant")]
    last_user = next((m for m in reversed(turns) if m.get("role") == "user"), {"role": "user", "content": ""})
    history = rng.sample(list(own), k=min(len(own), len(turns) // 2 + 1))
    out: list[Any] = []
    for m in production:
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        if role in ("system", "developer"):
            out.append(system if system is not None else m)
    earlier = (turns[:-1] if turns and turns[-1].get("role") == "user" else turns) if history else []
    for i, m in enumerate(earlier):
        user, assistant = history[(i // 2) % len(history)]
        out.append({**m, "content": _content(m.get("content"), user if m.get("role") == "user" else assistant)})
    out.append({**last_user, "content": _content(last_user.get("content"), text)})
    return out


def canary_body(
    production: dict[str, Any] | None,
    model: str,
    text: str,
    rng: random.Random,
    system: str | None,
    *,
    anthropic: bool = False,
    own: Sequence[tuple[str, str]] = (),
    ids: Callable[[str, Any], Any] | None = None,
) -> dict[str, Any]:
    """Production's body, key for key and in order, with the canary's conversation and its ids:
    ``ids(key, production's value)`` (:mod:`proxy.canary.ids`: recurring as production's do), else
    fresh ones in production's format.

    ``system`` replaces production's system prompt when not None: a system message for chat
    completions, the text of the top-level ``system`` field for Anthropic's Messages API."""
    turn_system = {"role": "system", "content": system} if system is not None and not anthropic else None
    if not production:
        return {
            "model": model,
            "messages": [*([turn_system] if turn_system else []), {"role": "user", "content": text}],
        }
    body: dict[str, Any] = {}
    for k, v in production.items():
        if k == "model":
            body[k] = model
        elif k == "messages":
            body[k] = canary_messages(v if isinstance(v, list) else [], text, rng, turn_system, own)
        elif k == "system" and anthropic and system is not None:
            body[k] = _content(v, system)
        elif k in ID_BODY_KEYS:
            body[k] = ids(k, v) if ids is not None else regenerate(v, rng)
        else:
            body[k] = v
    return body


def style_of(raw: bytes) -> tuple[tuple[str, str], bool]:
    """How a client serialised its JSON: its item and key separators, and whether non-ASCII was
    escaped, read from the JSON's structure (what is inside strings, a prompt's ", " say, is not
    the client's style).

    >>> style_of(b'{"a": 1, "b": "x"}'), style_of('{"a":"é"}'.encode())
    (((', ', ': '), True), ((',', ':'), False))
    >>> style_of(b'{"messages":[{"content":"red, green: blue \\\\": x"}]}')
    ((',', ':'), False)
    """
    item, key, escaped = _separators(raw[:4096])
    separators = (", " if item else ",", ": " if key else ":")
    # escapes say so; without any, Python's json.dumps pairs spaces with escaping, compact clients do not
    ascii_only = False if any(b > 0x7F for b in raw) else (escaped or item or key)
    return separators, ascii_only


def _separators(raw: bytes) -> tuple[bool, bool, bool]:
    """Outside strings: a space after a comma, after a colon; inside them: a ``\\u`` escape."""
    item = key = escaped = in_string = False
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if in_string:
            if c == 0x5C:  # backslash: the next byte is escaped
                escaped = escaped or raw[i + 1 : i + 2] == b"u"
                i += 2
                continue
            in_string = c != 0x22
        elif c == 0x22:
            in_string = True
        elif c in (0x2C, 0x3A) and raw[i + 1 : i + 2] == b" ":
            item, key = item or c == 0x2C, key or c == 0x3A
        i += 1
    return item, key, escaped


def serialise(body: dict[str, Any], style: tuple[tuple[str, str], bool]) -> bytes:
    separators, ascii_only = style
    return json.dumps(body, separators=separators, ensure_ascii=ascii_only).encode()
