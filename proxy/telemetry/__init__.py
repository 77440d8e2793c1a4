"""OpenTelemetry GenAI traces of what the proxy relays and decides: the ``otel`` extra, off unless
``otel.endpoint`` is set (:class:`proxy.settings.OtelSettings`); nothing of OpenTelemetry is
imported when it is off.

Per client request on ``/v1``, a SERVER span (the client's ``traceparent`` continued), and under it
the inference CLIENT span of the upstream call (:mod:`proxy.telemetry.semconv` names both), whose
context goes upstream in ``traceparent`` when the client sent one (a header the client did not send
is never added: canaries copy production's header set, so they carry one exactly when production
does). Both spans end at the last byte; they are exported once the answer is judged, with one
``gen_ai.evaluation.result`` event per choice (``refusal``: the verdict, its score, the detector) and,
for a production request, one for the harmful-request classifier. A canary is an inference span of
its own trace, with ``refusal_guard.traffic = canary``. Drift transitions are spans of their own.
Export is batched in a background thread; a collector that is down costs no request anything
(failures are counted in ``refusal_guard_trace_export_failures_total``, logged once a minute).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from proxy.canary.transition import Transition
    from proxy.exchange import Exchange
    from proxy.handoff import Call


class Tracing(Protocol):
    enabled: bool

    def begin(self, call: Call, headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Start ``call``'s spans (kept in ``call.trace``); the headers to forward upstream."""

    def finish(self, ex: Exchange) -> None:
        """End an exchange's spans with what was decided on it (or record a canary's)."""

    def transition(self, t: Transition) -> None: ...

    def shutdown(self) -> None: ...


class NoTracing:
    """Tracing off: every call a no-op, nothing imported."""

    enabled = False

    def begin(self, call: Any, headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        return list(headers)

    def finish(self, ex: Any) -> None:
        pass

    def transition(self, t: Any) -> None:
        pass

    def shutdown(self) -> None:
        pass
