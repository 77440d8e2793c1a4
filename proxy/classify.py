"""The side channel: classify finished exchanges off the request's hot path.

The request path only calls :meth:`SideChannel.submit`, which never blocks and never raises: a
full queue sheds the exchange's classification (counted), never the request. A worker drains the
queue in batches, extracts the assistant text, runs the detector in a thread, updates metrics,
writes the per-request log line, and hands the result to listeners (audit, canaries).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from detectors import Detector, Verdict
from detectors.base import provider_refusal
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


class SideChannel:
    """Bounded queue + one worker; see the module docstring."""

    def __init__(self, detector: Detector, metrics: Metrics, *, queue_size: int = 10_000, batch_size: int = 64) -> None:
        self.detector = detector
        self.metrics = metrics
        self.listeners: list[Listener] = []
        self._queue: asyncio.Queue[Exchange] = asyncio.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="classify")
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="refusal-guard-classify")

    async def stop(self, timeout: float = 10.0) -> None:
        """Drain what is queued (up to ``timeout`` seconds), then stop the worker."""
        if self._worker is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            logger.warning("classify_drain_timeout", pending=self._queue.qsize())
        self._worker.cancel()
        self._worker = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    def submit(self, ex: Exchange) -> None:
        """Hand an exchange over; never blocks, never raises."""
        try:
            if ex.endpoint is None or ex.status >= 400 or not ex.response:
                self._finish(ex)
                return
            self._queue.put_nowait(ex)
        except asyncio.QueueFull:
            self.metrics.classification_shed.inc()
            self._finish(ex, shed=True)
        except Exception:  # the side channel never fails a request
            logger.exception("side_channel_submit_failed", request_id=ex.request_id)

    async def judge(self, ex: Exchange) -> None:
        """Classify now, in the classify thread (strict audit needs the verdict before the response ends)."""
        if ex.endpoint is None or ex.status >= 400 or not ex.response:
            return
        await asyncio.get_running_loop().run_in_executor(self._executor, self._classify_batch, [ex])

    def finish(self, ex: Exchange) -> None:
        """Metrics, log line and listeners for an exchange already judged."""
        self._finish(ex)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self.metrics.classification_queue_depth.set(self._queue.qsize())
            try:
                await loop.run_in_executor(self._executor, self._classify_batch, batch)
                for ex in batch:
                    self._finish(ex)
            except Exception:
                logger.exception("classify_batch_failed", size=len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _classify_batch(self, batch: list[Exchange]) -> None:
        """Runs in the classify thread: parse, extract and judge each exchange."""
        for ex in batch:
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
