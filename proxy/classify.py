"""The side channel: classify finished exchanges off the request's hot path.

The request path only calls :meth:`SideChannel.submit`, which never blocks and never raises: a
full queue sheds the exchange's classification (counted), never the request. One thread drains the
queue in batches (extract the assistant text, run the detector); back in the loop, each judged
exchange updates metrics, writes the per-request log line and goes to listeners (audit, canaries).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from detectors import Detector, Verdict
from detectors.base import provider_refusal
from proxy.background import paced, take_batch
from proxy.extract import Answer, answers_from_body, answers_from_stream, prompt_text
from proxy.logs import logger
from proxy.metrics import Metrics

CLASSIFIED_ENDPOINTS = {"chat/completions": "chat", "completions": "completions", "responses": "responses"}


@dataclass(slots=True)
class Exchange:
    """One request and its answer, as the side channel sees it once the client has it."""

    request_id: str
    method: str
    path: str
    endpoint: str | None  # chat | completions | responses, or None for pass-through
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
    response: bytes = b""
    response_truncated: bool = False
    error: str | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    # set by the canary scheduler: called once the exchange is judged (or shed, with no verdicts)
    on_judged: Callable[[Exchange], None] | None = None
    canary: dict[str, str] | None = None  # suite and prompt id, for canary traffic
    headers: list[tuple[str, str]] = field(default_factory=list)  # request headers, lower-cased names
    audited: bool = False  # already committed to the audit log (strict durability)


Listener = Callable[[Exchange], None]
_Item = tuple[Exchange, "asyncio.Future[None] | None"]


def _awaited(item: _Item | None) -> bool:
    return item is None or item[1] is not None  # stopping, or someone awaits this verdict


class SideChannel:
    """Bounded hand-off to one classify thread; see the module docstring.

    A plain thread fed by a ``queue.SimpleQueue``, with results handed back to the loop in one
    ``call_soon_threadsafe`` per batch: an executor and an ``asyncio.Queue`` cost a future, a
    wrapper and two wake-ups per exchange, a visible share of the hot path's CPU.
    """

    def __init__(self, detector: Detector, metrics: Metrics, *, queue_size: int = 10_000, batch_size: int = 64) -> None:
        self.detector = detector
        self.metrics = metrics
        self.listeners: list[Listener] = []
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._inflight = 0  # submitted and not yet finished
        self._drained: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._drained = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="refusal-guard-classify", daemon=True)
        self._thread.start()

    async def stop(self, timeout: float = 10.0) -> None:
        """Drain what is queued (up to ``timeout`` seconds), then stop the thread."""
        if self._thread is None or self._drained is None:
            return
        if self._inflight:
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                logger.warning("classify_drain_timeout", pending=self._inflight)
        self._queue.put(None)
        self._thread = None

    def submit(self, ex: Exchange) -> None:
        """Hand an exchange over; never blocks, never raises."""
        try:
            if ex.endpoint is None or ex.status >= 400 or not ex.response or self._thread is None:
                self._finish(ex)
            elif self._queue.qsize() >= self._queue_size:  # waiting, not counting the batch in the detector
                self.metrics.classification_shed.inc()
                self._finish(ex, shed=True)
            else:
                self._inflight += 1
                self._queue.put((ex, None))
        except Exception:  # the side channel never fails a request
            logger.exception("side_channel_submit_failed", request_id=ex.request_id)

    async def judge(self, ex: Exchange) -> None:
        """Classify now, in the classify thread (strict audit needs the verdict before the response ends)."""
        if ex.endpoint is None or ex.status >= 400 or not ex.response:
            return
        if self._thread is None or self._loop is None:
            ex.verdicts = self.classify(ex)
            return
        done = self._loop.create_future()
        self._queue.put((ex, done))
        await done

    def finish(self, ex: Exchange) -> None:
        """Metrics, log line and listeners for an exchange already judged."""
        self._finish(ex)

    @property
    def pending(self) -> int:
        return self._inflight

    def _run(self) -> None:
        """The classify thread: take a batch, judge it, hand it back to the loop."""
        q, loop = self._queue, self._loop
        assert loop is not None
        while True:
            got = take_batch(q, self._batch_size, timeout=None, gather=0.0, urgent=_awaited)  # see proxy.background
            batch = [item for item in got if item is not None]
            if batch:
                self._classify_batch([ex for ex, _ in batch])
                try:
                    loop.call_soon_threadsafe(self._judged, batch)
                except RuntimeError:  # the loop is closed: shutting down
                    return
            if len(batch) < len(got):  # the stop sentinel came
                return

    def _judged(self, batch: list[_Item]) -> None:
        """In the loop: finish a judged batch."""
        for ex, done in batch:
            if done is not None:
                if not done.done():
                    done.set_result(None)
                continue
            self._inflight -= 1
            self._finish(ex)
        self.metrics.classification_queue_depth.set(self._inflight)
        if self._inflight == 0 and self._drained is not None:
            self._drained.set()

    def _classify_batch(self, batch: list[Exchange]) -> None:
        """Runs in the classify thread: parse, extract and judge each exchange."""
        for ex in paced(batch):
            try:
                ex.verdicts = self.classify(ex)
            except Exception as exc:
                self.metrics.detector_errors.inc()
                ex.verdicts = []
                ex.error = ex.error or f"classification failed: {type(exc).__name__}"
                logger.warning("detector_failed", request_id=ex.request_id, error=type(exc).__name__)

    def classify(self, ex: Exchange) -> list[Verdict]:
        """Verdicts for each answer in the exchange (one per choice)."""
        assert ex.endpoint is not None
        answers: list[Answer]
        if ex.stream:
            answers = answers_from_stream(ex.endpoint, ex.response)
        else:
            try:
                answers = answers_from_body(ex.endpoint, ex.response)
            except orjson.JSONDecodeError:
                answers = []
        if not answers:  # a 2xx the proxy cannot read an answer from: counted, relayed unchanged all the same
            self.metrics.unparseable.labels(ex.upstream).inc()
            return []
        prompt = prompt_text(ex.endpoint, ex.request or {})
        verdicts: list[Verdict | None] = [None] * len(answers)
        todo = []
        for i, a in enumerate(answers):
            if a.provider_refusal:
                verdicts[i] = provider_refusal()
            elif a.tool_call and not a.text.strip():
                verdicts[i] = Verdict.of("compliance", 0.0, "tool_call", "1")
            else:
                todo.append(i)
        if todo:
            judged = self.detector.classify_batch([answers[i].text for i in todo], [prompt] * len(todo))
            for i, v in zip(todo, judged, strict=True):
                verdicts[i] = v
        return [v for v in verdicts if v is not None]

    def _finish(self, ex: Exchange, *, shed: bool = False) -> None:
        try:
            for v in ex.verdicts:
                self.metrics.responses.labels(ex.model_label, ex.upstream, ex.traffic, v.label).inc()
            verdict = ex.verdicts[0].label if ex.verdicts else ("shed" if shed else None)
            logger.info(
                "request",
                request_id=ex.request_id,
                method=ex.method,
                path=ex.path,
                model=ex.model_label,
                upstream=ex.upstream,
                traffic=ex.traffic,
                stream=ex.stream,
                status=ex.status,
                latency_ms=round(ex.duration * 1000, 3),
                verdict=verdict,
                score=round(ex.verdicts[0].score, 4) if ex.verdicts else None,
                error=ex.error,
            )
            for listener in self.listeners:
                listener(ex)
            if ex.on_judged is not None:
                ex.on_judged(ex)
        except Exception:
            logger.exception("side_channel_finish_failed", request_id=ex.request_id)
