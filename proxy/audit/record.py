"""An exchange as an audit record, its canonical form, and the hash chain over records.

Canonical form: the record without ``hash``, serialised as JSON with sorted keys and no
whitespace (orjson). ``hash = sha256(prev_hash + canonical)``; the first record of a writer's
chain has ``prev_hash`` = 64 zeros. ``seq`` counts records of one writer instance (``writer``),
so replicas never coordinate: each has its own chain.

A record carries every decision taken on it: the answer's verdict and score (and each choice's, in
``verdicts``) with the detector's name and version; for a production request, the harmful-request
classifier's decision (``harm``: flagged or not, score, classifier and version); for a canary, its
suite, prompt id and expected outcome (``canary``). Privacy modes never touch these. Records written
before a field existed lack it and still verify: the hash covers the record as it was written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import orjson

from proxy.exchange import Exchange
from proxy.extract import answers_from_stream

GENESIS = "0" * 64
# Request headers never written: credentials and cookies, whatever their case.
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "cookie",
        "set-cookie",
        "x-auth-token",
        "x-access-token",
        "openai-organization",
    }
)
FIELDS = (
    "request_id",
    "ts_start",
    "ts_end",
    "client_key_id",
    "model",
    "model_label",
    "upstream",
    "traffic",
    "endpoint",
    "method",
    "path",
    "stream",
    "status",
    "latency_ms",
    "upstream_ms",
    "headers",
    "request",
    "response",
    "verdict",
    "score",
    "detector",
    "detector_version",
    "verdicts",
    "harm",
    "error",
    "canary",
)


def secret_header(name: str) -> bool:
    """Whether a (lower-cased) request header may carry a secret: never audited or stored."""
    return name in SECRET_HEADERS or "secret" in name or "token" in name


def safe_headers(raw: list[tuple[str, str]]) -> dict[str, str]:
    """Request headers with every secret-bearing one removed."""
    return {k: v for k, v in raw if not secret_header(k)}


TRUNCATED = "x-refusal-guard-truncated"  # the name of the mark left where headers were cut


def audit_headers(raw: list[tuple[str, str]], limit: int) -> list[tuple[str, str]]:
    """The safe headers an audit record keeps, at most ``limit`` characters of names and values: a
    longer value is cut, and once the budget is spent the rest are dropped; either way the record
    says so in a last ``x-refusal-guard-truncated`` entry (how many characters were left out).

    >>> audit_headers([("a", "x" * 10), ("b", "y" * 10)], 15)
    [('a', 'xxxxxxxxxx'), ('b', 'yyy'), ('x-refusal-guard-truncated', '7 characters')]
    """
    kept: list[tuple[str, str]] = []
    budget, dropped = limit, 0
    for k, v in safe_headers(raw).items():
        size = len(k) + len(v)
        if size <= budget:
            kept.append((k, v))
            budget -= size
        elif budget > len(k):
            kept.append((k, v[: budget - len(k)]))
            dropped += size - budget
            budget = 0
        else:
            dropped += size
    if dropped:
        kept.append((TRUNCATED, f"{dropped} characters"))
    return kept


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="microseconds")


def _response(ex: Exchange) -> Any:
    """The response body as JSON; a stream reassembled into its choices' text."""
    if not ex.response:
        return None
    if ex.stream:
        return {
            "stream": True,
            "truncated": ex.response_truncated,
            "choices": [
                {"index": i, "text": a.text, "provider_refusal": a.provider_refusal, "tool_call": a.tool_call}
                for i, a in enumerate(answers_from_stream(ex.endpoint or "chat", ex.response))
            ],
        }
    try:
        return orjson.loads(ex.response)
    except orjson.JSONDecodeError:
        return {"text": ex.response[:1_000_000].decode("utf-8", "replace")}


def _harm(ex: Exchange) -> dict[str, Any] | None:
    """A production request's harmful-request decision, as the proxy's own test counted it."""
    if ex.harmful is None:
        return None
    name, version = ex.harm_by or (None, None)
    return {"harmful": ex.harmful, "score": ex.harm_score, "classifier": name, "version": version}


def build(ex: Exchange) -> dict[str, Any]:
    """The record of one exchange (before privacy and chaining)."""
    first = ex.verdicts[0] if ex.verdicts else None
    return {
        "request_id": ex.request_id,
        "ts_start": _iso(ex.started),
        "ts_end": _iso(ex.started + ex.duration),
        "client_key_id": ex.client_key_id,
        "model": ex.model,
        "model_label": ex.model_label,
        "upstream": ex.upstream,
        "traffic": ex.traffic,
        "endpoint": ex.endpoint,
        "method": ex.method,
        "path": ex.path,
        "stream": ex.stream,
        "status": ex.status,
        "latency_ms": round(ex.duration * 1000, 3),
        "upstream_ms": round(ex.upstream_wait * 1000, 3),
        "headers": safe_headers(ex.headers),
        "request": ex.request,
        "response": _response(ex),
        "verdict": first.label if first else None,
        "score": round(first.score, 4) if first else None,
        "detector": first.detector if first else None,
        "detector_version": first.version if first else None,
        "verdicts": [v.as_dict() for v in ex.verdicts],
        "harm": _harm(ex),
        "error": ex.error,
        "canary": ex.canary,
    }


def canonical(record: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in record.items() if k != "hash"}, option=orjson.OPT_SORT_KEYS)


def chain(record: dict[str, Any], prev_hash: str) -> str:
    """The record's hash, given its predecessor's."""
    return hashlib.sha256(prev_hash.encode() + canonical(record)).hexdigest()


def event(kind: str, body: dict[str, Any], at: float) -> dict[str, Any]:
    """A non-exchange record (drift transitions, quarantine, prunes) in the same chain."""
    return {
        **dict.fromkeys(FIELDS),
        "traffic": "event",
        "ts_start": _iso(at),
        "ts_end": _iso(at),
        "request_id": f"event-{kind}",
        "event": {"kind": kind, **body},
    }
