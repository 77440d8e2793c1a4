"""Privacy modes: ``full`` keeps content; ``redact`` removes emails, phone numbers, key-like strings and
configured patterns; ``hash`` replaces content with salted hashes; ``metadata`` drops content.

Verdicts, scores, ids, timings and statuses are kept in every mode.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

_BUILTIN = (
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",  # emails
    r"(?<![\w])\+?\d[\d\s().-]{7,}\d(?![\w])",  # phone numbers
    r"\b(?:sk|pk|rk|ak)-[A-Za-z0-9_-]{16,}\b",  # provider-style API keys
    r"\bBearer\s+[A-Za-z0-9._~+/=-]{16,}",
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",  # AWS access key ids
    r"\b[A-Za-z0-9_\-]{32,}\b",  # long opaque tokens
)
CONTENT = ("request", "response", "headers")


def _walk(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_walk(v, fn) for v in value]
    if isinstance(value, dict):
        return {
            k: (v if k in ("model", "role", "type", "object", "finish_reason", "index") else _walk(v, fn))
            for k, v in value.items()
        }
    return value


class Privacy:
    def __init__(self, mode: str, patterns: Sequence[str] = (), salt: str = "") -> None:
        self.mode = mode
        self._re = re.compile("|".join(f"(?:{p})" for p in (*_BUILTIN, *patterns)))
        self._salt = salt.encode()

    def _redact(self, s: str) -> str:
        return self._re.sub("[REDACTED]", s)

    def _hash(self, s: str) -> str:
        return "sha256:" + hashlib.sha256(self._salt + s.encode("utf-8", "surrogatepass")).hexdigest()

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        if self.mode == "full":
            return record
        out = dict(record)
        for key in CONTENT:
            if self.mode == "metadata":
                out[key] = None
            elif out.get(key) is not None:
                out[key] = _walk(out[key], self._redact if self.mode == "redact" else self._hash)
        out["error"] = self._redact(out["error"]) if isinstance(out.get("error"), str) else out.get("error")
        out["privacy"] = self.mode
        return out
