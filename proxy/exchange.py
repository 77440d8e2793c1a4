"""The record every stage after an answer works on, and the endpoint table.

This module imports nothing else from ``proxy``: the relay builds an :class:`Exchange`, the
:mod:`~proxy.pipeline` stages read it, the audit log turns it into a record, and none of them needs
the others to know what an exchange is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from detectors import Verdict

# Classified endpoints: path below /v1/ -> the endpoint family the extractors know.
ENDPOINTS: dict[str, str] = {
    "chat/completions": "chat",
    "completions": "completions",
    "responses": "responses",
    "messages": "messages",  # Anthropic's Messages API
}

Traffic = Literal["production", "canary"]


@dataclass(slots=True)
class Outcome:
    """What the client received, as the relay saw it once the last byte left."""

    status: int
    body: bytes
    upstream_wait: float
    first_chunk_at: float | None = None  # a stream's first chunk to the client (time.perf_counter)
    truncated: bool = False
    error: str | None = None
    error_kind: str | None = None
    disconnected: bool = False


@dataclass(slots=True)
class Exchange:
    """One request and its answer, once the client has it (a canary's, once the proxy has it)."""

    request_id: str
    method: str
    path: str
    endpoint: str | None  # chat | completions | responses | messages, or None for pass-through
    model: str | None
    model_label: str
    upstream: str
    traffic: str
    stream: bool
    status: int
    started: float  # wall clock, seconds since the epoch
    duration: float
    upstream_wait: float
    client_key_id: str | None = None
    request: dict[str, Any] | None = None
    request_body: bytes = b""  # the request as the client serialised it (canaries copy its style)
    response: bytes = b""
    response_truncated: bool = False
    error: str | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    shed: bool = False  # the classify queue was full: counted, logged, audited without verdicts
    harmful: bool | None = None  # production: the harmful-request classifier's call on the last user turn
    harm_score: float | None = None  # its score (P(harmful)); the classifier's name and version in ``harm_by``
    harm_by: tuple[str, str] | None = None
    canary: dict[str, str] | None = None  # suite, prompt id and expected outcome, for canary traffic
    headers: list[tuple[str, str]] = field(default_factory=list)  # request headers as audited, lower-cased names
    # production: the request headers as the relay forwarded them (canaries copy this set); kept in this
    # process only, never audited, stored or published
    forwarded: list[tuple[str, str]] = field(default_factory=list)
    first_chunk: float | None = None  # a stream: seconds from the request to its first chunk out
    trace: Any = None  # the request's open spans (proxy.telemetry), ended once the answer is judged

    @property
    def classifiable(self) -> bool:
        """An answer the classifier should read: a classified endpoint, a 2xx or 3xx, some bytes."""
        return self.endpoint is not None and self.status < 400 and bool(self.response)
