"""What a replica publishes to the state store, gathered off the request path.

The pipeline stage :class:`PublishOutcomes` takes the production-side outcomes every replica sees
(each production answer with the harmful-request classifier's score, in order; refusal counts per
minute bucket), the fingerprint's observations (:mod:`proxy.fingerprint.stage`) and an operator's
rebaseline, and :class:`Outbox` holds them with the latest request shapes until the state
sync's next batch (:mod:`proxy.state.sync`): the store sees one write per replica per second, not
one per request. The leader consumes the union, so one statistic per model and suite sees every
replica's traffic.

While the store is down the outbox keeps what it holds (bounded: past ``limit`` outcomes the oldest
are dropped and counted), and the next batch that goes through carries it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from proxy.audit.record import secret_header
from proxy.canary.disguise import DROPPED
from proxy.canary.shape import WireRequest
from proxy.disposition.apps import app_of
from proxy.exchange import Exchange
from proxy.metrics import Metrics
from proxy.state.records import Publication, Quarantine
from proxy.watch_settings import DispositionSettings, ShiftSettings

ANSWERS = "a"  # [ANSWERS, model, bucket start, refused, total]
# [FINGERPRINT, model, endpoint, prompt x, prompt tokens, answer x, completion tokens, model, fp, sketch,
#  sampling, production shape] (proxy.fingerprint.features)
FINGERPRINT = "f"
REBASELINE = "b"  # [REBASELINE, model]: an operator accepts the model now served (proxy.fingerprint)
DISPOSITION = "d"  # [DISPOSITION, model, app, harmful score, flagged, answered] (proxy.disposition)
JUDGED = "j"  # [JUDGED, model, app, the secret judge's score, flagged, answered] (proxy.judging)
_ORDERED = (FINGERPRINT, REBASELINE, DISPOSITION, JUDGED)  # events the leader takes one by one, in order


class Outbox:
    """Outcomes, shapes, names and quarantine decisions waiting for the next batch."""

    def __init__(self, metrics: Metrics, *, limit: int = 200_000) -> None:
        self.metrics = metrics
        self.limit = limit
        self._ordered: deque[list[Any]] = deque()
        self._answers: dict[tuple[str, float], list[int]] = {}
        self._shapes: dict[str, dict[str, Any]] = {}
        self._names: list[tuple[str, str]] = []
        self._quarantines: list[Quarantine] = []
        self._releases: list[tuple[str, str | None]] = []

    def disposition(self, model: str, app: str, score: float, flagged: bool, answered: bool) -> None:
        self._append([DISPOSITION, model, app, score, flagged, answered])

    def judged(self, model: str, app: str, score: float, flagged: bool, answered: bool) -> None:
        self._append([JUDGED, model, app, score, flagged, answered])

    def _append(self, event: list[Any]) -> None:
        if len(self._ordered) >= self.limit:
            self._ordered.popleft()
            self.metrics.state_store_errors.labels("dropped").inc()
        self._ordered.append(event)

    def fingerprint(self, event: list[Any]) -> None:
        self._append(event)

    def rebaseline(self, model: str) -> None:
        self._append([REBASELINE, model])

    def answers(self, model: str, bucket: float, refused: int, total: int) -> None:
        counts = self._answers.setdefault((model, bucket), [0, 0])
        counts[0] += refused
        counts[1] += total

    def shape(self, model: str, request: dict[str, Any]) -> None:
        self._shapes[model] = request  # the latest wins

    def name(self, upstream: str, model: str) -> None:
        self._names.append((upstream, model))

    def quarantine(self, q: Quarantine) -> None:
        self._quarantines.append(q)

    def release(self, model: str, decision: str | None) -> None:
        self._quarantines = [q for q in self._quarantines if q.model != model]
        self._releases.append((model, decision))

    def pending(self) -> tuple[set[str], set[str]]:
        """Models with a quarantine, and with a release, not yet in the store (the local decisions in force)."""
        return {q.model for q in self._quarantines}, {m for m, _ in self._releases}

    def take(self) -> Publication:
        events = [*self._ordered, *([ANSWERS, m, b, r, t] for (m, b), (r, t) in self._answers.items())]
        pub = Publication(events, self._shapes, self._names, self._quarantines, self._releases)
        self._ordered, self._answers, self._shapes, self._names = deque(), {}, {}, []
        self._quarantines, self._releases = [], []
        return pub

    def put_back(self, pub: Publication) -> None:
        """A batch the store did not take: kept, ahead of what came since (outcomes keep their order)."""
        for ev in reversed([e for e in pub.events if e[0] in _ORDERED]):
            self._ordered.appendleft(ev)
        while len(self._ordered) > self.limit:
            self._ordered.popleft()
            self.metrics.state_store_errors.labels("dropped").inc()
        for _, m, b, r, t in (e for e in pub.events if e[0] == ANSWERS):
            self.answers(m, b, r, t)
        self._shapes = {**pub.shapes, **self._shapes}
        self._names = [*pub.names, *self._names]
        later = {q.model for q in self._quarantines} | {m for m, _ in self._releases}
        self._releases = [r for r in pub.releases if r[0] not in later] + self._releases
        self._quarantines = [q for q in pub.quarantines if q.model not in later] + self._quarantines


def sanitised(request: WireRequest, privacy: str) -> dict[str, Any]:
    """A production request as the store keeps it: headers without credentials, and of those that may
    carry a secret the name only; the body's layout and parameters with every message text blanked
    (canaries never copy them) but the system prompt, which is kept only under the audit's ``full``
    privacy mode.

    >>> req = WireRequest("chat", [("authorization", "Bearer k"), ("user-agent", "x"), ("openai-organization", "o")],
    ...     {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
    ...                                 {"role": "user", "content": "my secret"}]}, ((",", ":"), False))
    >>> s = sanitised(req, "full"); s["headers"], [m["content"] for m in s["body"]["messages"]]
    ([['user-agent', 'x'], ['openai-organization', None]], ['Be brief.', ''])
    >>> [m["content"] for m in sanitised(req, "redact")["body"]["messages"]]
    ['', '']
    """
    keep_system = privacy == "full"
    body = dict(request.body)
    messages = body.get("messages")
    if isinstance(messages, list):
        body["messages"] = [_blank(m, keep_system) for m in messages]
    if "system" in body and not keep_system:
        body["system"] = _blank_content(body["system"])
    for key in ("prompt", "input"):
        if key in body:
            body[key] = _blank_content(body[key])
    return {
        "endpoint": request.endpoint,
        "headers": [[k, None if secret_header(k) else v] for k, v in request.headers if k not in DROPPED],
        "body": body,
        "style": [list(request.style[0]), request.style[1]],
    }


def restored(data: dict[str, Any]) -> WireRequest:
    """The :class:`WireRequest` a sanitised dict describes (what the leader's canaries copy); the
    headers stored by name only are ``withheld`` (:meth:`~proxy.canary.shape.TrafficShape.adopt`
    fills them in)."""
    separators, ascii_only = data["style"]
    return WireRequest(
        data["endpoint"],
        [(str(k), "" if v is None else str(v)) for k, v in data["headers"]],
        data["body"],
        ((str(separators[0]), str(separators[1])), bool(ascii_only)),
        frozenset(str(k) for k, v in data["headers"] if v is None),
    )


def _blank(message: Any, keep_system: bool) -> Any:
    if not isinstance(message, dict):
        return message
    if keep_system and message.get("role") in ("system", "developer"):
        return message
    return {**message, "content": _blank_content(message.get("content"))}


def _blank_content(content: Any) -> Any:
    if isinstance(content, list):
        return [{**p, "text": ""} if isinstance(p, dict) and "text" in p else p for p in content]
    return "" if isinstance(content, str) else content


class PublishOutcomes:
    """A pipeline stage: production-side outcomes into the outbox, for the leader's statistics
    (the production shift test, :mod:`proxy.shift`; the disposition watch, :mod:`proxy.disposition`);
    ``refusal_guard_harmful_requests_total`` counts this replica's flagged requests by verdict."""

    def __init__(
        self,
        outbox: Outbox,
        shift: ShiftSettings,
        disposition: DispositionSettings,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.disposition_enabled = disposition.enabled
        self.bucket_seconds = shift.bucket_seconds
        self.metrics = metrics
        self.clock = clock

    def __call__(self, ex: Exchange) -> None:
        if ex.traffic != "production" or not ex.verdicts:
            return
        model = ex.model_label
        now = self.clock()
        self.outbox.answers(
            model, now - now % self.bucket_seconds, sum(v.refused for v in ex.verdicts), len(ex.verdicts)
        )
        label = ex.verdicts[0].label
        if ex.harm_score is not None and self.disposition_enabled:
            app = app_of(ex.endpoint, ex.request, ex.client_key_id)
            self.outbox.disposition(model, app, ex.harm_score, bool(ex.harmful), label == "compliance")
        if ex.harmful:
            self.metrics.harmful_requests.labels(model, label).inc()
