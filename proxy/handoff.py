"""What a finished request leaves behind: its metrics at once, and its exchange for the
:class:`~proxy.pipeline.Pipeline` (classified, logged, audited off the hot path).

:class:`~proxy.service.ProxyService` fills in a :class:`Call` as the request moves through its steps;
the relay (:mod:`proxy.relay`) tells the call's :class:`Handoff` once the last byte left, or, under
strict audit durability, asks it to run the pipeline before the last byte may leave. Nothing here
ever raises into traffic: a failure to record is logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.exchange import ENDPOINTS, Exchange, Outcome
from proxy.logs import logger
from proxy.metrics import NO_UPSTREAM, UNROUTED, Metrics
from proxy.pipeline import Pipeline


@dataclass(slots=True)
class Call:
    """What is known about a request so far, as it moves through :meth:`ProxyService.forward`."""

    request_id: str
    path: str  # relative to /v1/
    method: str
    started_wall: float
    started: float = field(default_factory=time.perf_counter)
    client_key_id: str | None = None
    model: str | None = None
    label: str = UNROUTED
    upstream: str = NO_UPSTREAM
    stream: bool = False
    request: dict | None = None  # type: ignore[type-arg]
    headers: list[tuple[str, str]] = field(default_factory=list)  # as audited (proxy.audit.record.audit_headers)
    forwarded: list[tuple[str, str]] = field(default_factory=list)  # as relayed: this process's, never stored
    body: bytes = b""
    held: bool = False  # strict durability: the pipeline ran before the response ended
    trace: Any = None  # its open spans (proxy.telemetry), when tracing is on

    @property
    def endpoint(self) -> str | None:
        """The classified endpoint (``chat``, ``messages``, ...), or ``None`` for the pass-through."""
        return ENDPOINTS.get(self.path) if self.method == "POST" else None


@dataclass(slots=True)
class Handoff:
    """One call's way to the pipeline."""

    call: Call
    metrics: Metrics
    pipeline: Pipeline
    strict: bool = False  # strict audit durability: :meth:`hold` before the response may end
    clock: Callable[[], float] = time.time

    def sent(self, out: Outcome) -> None:
        """The client has its answer (or the request ended): metrics now, the exchange to the pipeline."""
        call = self.call
        try:
            duration = time.perf_counter() - call.started
            self.metrics.requests.labels(call.label, call.upstream, str(out.status)).inc()
            if call.upstream != NO_UPSTREAM:
                self.metrics.request_duration.labels(
                    call.label, call.upstream, "true" if call.stream else "false"
                ).observe(duration)
                self.metrics.overhead.observe(max(0.0, duration - out.upstream_wait))
            if out.error_kind:
                self.metrics.upstream_error(call.upstream, out.error_kind)
            if not call.held:  # under strict durability the pipeline already ran, before the response ended
                self.pipeline.submit(self.exchange(out, duration))
        except Exception:  # monitoring never breaks traffic
            logger.exception("record_failed", request_id=call.request_id)

    async def hold(self, out: Outcome) -> None:
        """Strict durability: the exchange takes the pipeline (judged, audited) before the response may end."""
        self.call.held = True
        await self.pipeline.run(self.exchange(out))

    def exchange(self, out: Outcome, duration: float | None = None) -> Exchange:
        call = self.call
        return Exchange(
            request_id=call.request_id,
            method=call.method,
            path="/v1/" + call.path,
            endpoint=call.endpoint if call.upstream != NO_UPSTREAM else None,
            model=call.model,
            model_label=call.label,
            upstream=call.upstream,
            traffic="production",
            stream=call.stream,
            status=out.status,
            started=call.started_wall,
            duration=time.perf_counter() - call.started if duration is None else duration,
            upstream_wait=out.upstream_wait,
            client_key_id=call.client_key_id,
            request=call.request,
            request_body=call.body,
            response=out.body,
            response_truncated=out.truncated,
            error=out.error or ("client disconnected" if out.disconnected else None),
            headers=call.headers,
            forwarded=call.forwarded,
            first_chunk=None if out.first_chunk_at is None else out.first_chunk_at - call.started,
            trace=call.trace,
        )
