"""The after-answer pipeline: every finished exchange, production or canary, takes one road.

    classify (in the classify thread) -> learn model names -> count -> log -> audit -> traffic shape
    -> shift -> harmful watch -> canary feedback

``create_app`` lists the stages once, in order (adding one is one line there). A stage is a
one-method object, called in the event loop with the judged exchange; it returns ``None``, or a
``concurrent.futures.Future`` when the exchange is durable only once that resolves (the audit stage
under strict durability).

Two ways in, one road:

* :meth:`Pipeline.submit` for the request path: never blocks, never raises. A full queue sheds the
  classification (counted), never the request: the exchange still goes through the stages, unjudged.
* :meth:`Pipeline.run`, awaited: by strict audit durability (the response may end only once its
  record is durable) and by canaries (which need the verdict).

The classify thread is a plain thread fed by a ``queue.SimpleQueue``, with results handed back to
the loop in one ``call_soon_threadsafe`` per batch: an executor and an ``asyncio.Queue`` cost a
future, a wrapper and two wake-ups per exchange, a visible share of the hot path's CPU.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Protocol

from detectors import Verdict
from proxy.background import paced, take_batch
from proxy.exchange import Exchange
from proxy.logs import logger
from proxy.metrics import Metrics


class Stage(Protocol):
    """One step after classification, e.g. :class:`proxy.stages.CountVerdicts`."""

    def __call__(self, ex: Exchange) -> Future[None] | None:
        """Act on a judged exchange; return a future only if the exchange is durable once it resolves."""
        ...


_Item = tuple[Exchange, "asyncio.Future[None] | None"]


def _awaited(item: _Item | None) -> bool:
    return item is None or item[1] is not None  # stopping, or someone awaits this verdict


class Pipeline:
    """See the module docstring. ``classify`` runs in the classify thread; ``stages`` in the loop."""

    def __init__(
        self,
        classify: Callable[[Exchange], list[Verdict]],
        stages: Sequence[Stage],
        metrics: Metrics,
        *,
        queue_size: int = 10_000,
        batch_size: int = 64,
        progress: threading.Condition | None = None,
    ) -> None:
        self.classify = classify
        self.stages = tuple(stages)
        self.metrics = metrics
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._inflight = 0  # submitted and not yet through the stages
        self._drained: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # notified each time an exchange comes out of the stages: tests wait on it (proxy.testing)
        self.progress = progress if progress is not None else threading.Condition()

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

    @property
    def pending(self) -> int:
        return self._inflight

    def submit(self, ex: Exchange) -> None:
        """Hand an exchange over; never blocks, never raises."""
        try:
            if not ex.classifiable or self._thread is None:
                self._through(ex)
            elif self._queue.qsize() >= self._queue_size:  # waiting, not counting the batch in the detector
                self.metrics.classification_shed.inc()
                ex.shed = True
                self._through(ex)
            else:
                self._inflight += 1
                self._queue.put((ex, None))
        except Exception:  # the pipeline never fails a request
            logger.exception("pipeline_submit_failed", request_id=ex.request_id)

    async def run(self, ex: Exchange) -> Exchange:
        """Classify now (in the classify thread) and take the stages; return once every durable stage is.

        Raises what a durable stage raised (strict audit: the record could not be made durable)."""
        if ex.classifiable:
            if self._thread is None or self._loop is None:
                self._judge(ex)
            else:
                done = self._loop.create_future()
                self._queue.put((ex, done))
                await done
        for fut in self._through(ex):
            await asyncio.wrap_future(fut)
        return ex

    def _run(self) -> None:
        """The classify thread: take a batch, judge it, hand it back to the loop."""
        q, loop = self._queue, self._loop
        assert loop is not None
        while True:
            got = take_batch(q, self._batch_size, timeout=None, gather=0.0, urgent=_awaited)  # see proxy.background
            batch = [item for item in got if item is not None]
            if batch:
                for ex, _ in paced(batch):
                    self._judge(ex)
                try:
                    loop.call_soon_threadsafe(self._judged, batch)
                except RuntimeError:  # the loop is closed: shutting down
                    return
            if len(batch) < len(got):  # the stop sentinel came
                return

    def _judge(self, ex: Exchange) -> None:
        try:
            ex.verdicts = self.classify(ex)
        except Exception as exc:  # a detector failure is counted and logged, never seen by the client
            self.metrics.detector_errors.inc()
            ex.verdicts = []
            ex.error = ex.error or f"classification failed: {type(exc).__name__}"
            logger.warning("detector_failed", request_id=ex.request_id, error=type(exc).__name__)

    def _judged(self, batch: list[_Item]) -> None:
        """In the loop: a judged batch goes on through the stages (or back to whoever awaits it)."""
        for ex, done in batch:
            if done is not None:
                if not done.done():
                    done.set_result(None)
                continue
            self._inflight -= 1
            for fut in self._through(ex):
                fut.add_done_callback(_quiet)  # the writer counted and logged a failure; nobody awaits it
        self.metrics.classification_queue_depth.set(self._inflight)
        if self._inflight == 0 and self._drained is not None:
            self._drained.set()

    def _through(self, ex: Exchange) -> list[Future[None]]:
        """Every stage, in order; a failing stage is logged and the others still run."""
        durable: list[Future[None]] = []
        for stage in self.stages:
            try:
                fut = stage(ex)
            except Exception:
                logger.exception("pipeline_stage_failed", stage=type(stage).__name__, request_id=ex.request_id)
                continue
            if fut is not None:
                durable.append(fut)
        with self.progress:
            self.progress.notify_all()
        return durable


def _quiet(fut: Future[None]) -> None:
    fut.exception()  # retrieved, so it is not reported again as never retrieved
