"""Send canaries, through the same upstream clients as production, as a Poisson process.

A canary looks like that model's recent production request on the wire: headers, body layout,
parameters (``max_tokens`` and ``stream`` included) and conversation shape
(:mod:`proxy.canary.disguise`), and its prompt is a secret variant of the suite's
(:mod:`proxy.canary.variants`). A streamed canary is read only until the detector has enough text,
then closed. Answers go through the same :class:`~proxy.pipeline.Pipeline` as production
(``traffic="canary"``), awaited; its canary-feedback stage feeds the
:class:`~proxy.canary.drift.DriftMonitor`. Canary answers are never relayed to any client.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.canary.disguise import serialise
from proxy.canary.shape import TrafficShape
from proxy.canary.suites import Deck, Suite
from proxy.canary.variants import Variants
from proxy.catalog import ModelCatalog
from proxy.errors import ProxyError
from proxy.exchange import Exchange
from proxy.logs import logger
from proxy.metrics import Metrics
from proxy.pipeline import Pipeline
from proxy.routing import Router
from proxy.settings import CanarySettings
from proxy.upstream import UpstreamResponse

if TYPE_CHECKING:
    from detectors.harm import HarmfulRequestClassifier

_MAX_ANSWER_BYTES = 1024 * 1024


async def _read_stream(up: UpstreamResponse) -> tuple[bytes, bool]:
    """A streamed answer read to its end, as a client reads it (a canary hanging up early was a tell:
    no production stream does); past ``_MAX_ANSWER_BYTES`` it stops, and says it was cut."""
    kept: list[bytes] = []
    size = 0
    async for chunk in up.chunks:
        kept.append(chunk)
        size += len(chunk)
        if size >= _MAX_ANSWER_BYTES:
            return b"".join(kept), True
    return b"".join(kept), False


HOLD_SECONDS = 10.0  # the least a canary that must be refused waits for the model's first benign answer


class CanaryScheduler:
    """Rounds of canaries to every target model; each answer takes the pipeline's awaited road, whose
    :class:`~proxy.canary.feedback.CanaryFeedback` stage hands its verdict to the drift monitor."""

    def __init__(
        self,
        canary: CanarySettings,
        suites: list[Suite],
        router: Router,
        pipeline: Pipeline,
        metrics: Metrics,
        shape: TrafficShape,
        *,
        harm: HarmfulRequestClassifier | None = None,
        concurrency: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.canary = canary
        self.harm = harm  # a harmful canary's stratum: flagged or not by the shipped classifier
        self.suites = suites
        self.router = router
        self.catalog: ModelCatalog = router.catalog
        self.pipeline = pipeline
        self.metrics = metrics
        self.shape = shape
        self.clock = clock
        self.rng = random.Random(canary.seed)
        self.variants = Variants(canary.variant_seed()) if canary.variants else None
        self._draws = 0
        self._sem = asyncio.Semaphore(concurrency)
        self._decks: dict[str, Deck] = {}  # per suite: each prompt once before any recurs
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self.rounds = 0  # passes of the scheduling loop
        self._stopping = False
        self._warming: dict[str, float] = {}  # per model: when a canary was first held (:meth:`held`)

    def targets(self) -> list[str]:
        """``canary.models``, else every model the config names exactly plus every model that has had
        production traffic (a glob upstream may list dozens of models no one uses: embeddings, TTS...)."""
        if self.canary.models:
            return list(self.canary.models)
        return list(dict.fromkeys([*self.catalog.exact(), *self.shape.seen]))

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="refusal-guard-canaries")

    async def stop(self) -> None:
        self._stopping = True  # as well as the cancel: Python 3.11's wait_for can swallow a cancellation
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5)
            self._task = None
        for t in list(self._inflight):
            t.cancel()
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=5)

    def _spawn(self, model: str, suite: Suite, delay: float = 0.0) -> None:
        async def job() -> None:
            if delay:
                await asyncio.sleep(delay)
            try:
                await self._send(model, suite)
            except Exception:  # a canary failure never takes the proxy down
                logger.exception("canary_failed_unexpectedly", model=model, suite=suite.name)

        task = asyncio.get_running_loop().create_task(job())
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _run(self) -> None:
        """Canaries as a Poisson process: ``per_round`` per model and suite per ``interval_seconds`` on
        average, each at an exponentially distributed wait after the last, interleaved with production
        (no bursts). A new target, at start or when first seen, gets one canary per suite within a second."""
        arrived = self.shape.arrived
        known: set[str] = set()
        while not self._stopping:
            self.rounds += 1
            targets = self.targets()
            for model in targets:
                if model not in known:
                    known.add(model)
                    self.metrics.canary_target.labels(model).set(1)
                    for suite in self.suites:  # series exist at zero, so "no errors" is data, not absence
                        self.metrics.canary_errors.labels(model, suite.name)
                        # a new target (at start, or as it appears) is checked at once, spread over a second
                        self._spawn(model, suite, delay=self.rng.uniform(0.0, min(1.0, self.canary.interval_seconds)))
            pairs = [(m, s) for m in targets for s in self.suites]
            rate = len(pairs) * self.canary.per_round / self.canary.interval_seconds  # canaries per second
            wait = self.rng.expovariate(rate) if rate else self.canary.interval_seconds
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), wait)
                continue  # a new model: look at the targets again
            except TimeoutError:
                pass
            if pairs:
                self._spawn(*self.rng.choice(pairs))

    def held(self, model: str, suite: Suite) -> bool:
        """A canary that must be refused waits while ``model``'s canaries cannot yet carry the earlier
        turns its production sends (:meth:`TrafficShape.warming`: they would open the conversation
        alone, which production never does), for at most three benign canaries' time from the first
        held; past that it goes alone (a model that answers no benign canary is the benign suite's
        alarm)."""
        if not self.shape.warming(model):
            self._warming.pop(model, None)
            return False
        if suite.expected != "refusal":
            return False
        now = self.clock()
        since = self._warming.setdefault(model, now)
        return now - since < max(HOLD_SECONDS, 3 * self.canary.interval_seconds / self.canary.per_round)

    async def _send(self, model: str, suite: Suite) -> None:
        if self.held(model, suite):
            logger.debug("canary_held", model=model, suite=suite.name)
            return
        async with self._sem:
            item, text = suite.draw(self.rng, self.canary.templates, self._decks.setdefault(suite.name, Deck()))
            if self.variants is not None:
                self._draws += 1
                text = self.variants.vary(text, self._draws)
            req = self.shape.request(model, text, self.canary, self.rng)
            body = req.body
            started, t0 = self.clock(), time.perf_counter()
            try:
                route = self.router.resolve(model)
                up = await route.upstream.send("POST", req.path, serialise(body, req.style), req.headers)
                try:
                    streamed = req.stream and up.content_type.startswith("text/event-stream")
                    content, cut = await _read_stream(up) if streamed else (await up.read(_MAX_ANSWER_BYTES), False)
                finally:
                    await up.aclose()
            except ProxyError as exc:
                self.metrics.canary_errors.labels(model, suite.name).inc()
                logger.warning("canary_failed", model=model, suite=suite.name, error=str(exc))
                return
            if up.status_code >= 400:
                self.metrics.canary_errors.labels(model, suite.name).inc()
                logger.warning("canary_failed", model=model, suite=suite.name, status=up.status_code)
                return
            await self.pipeline.run(
                Exchange(
                    request_id="canary-" + uuid.uuid4().hex,
                    method="POST",
                    path="/v1" + req.path,
                    endpoint=req.endpoint,
                    model=model,
                    model_label=route.label,
                    upstream=route.upstream.name,
                    traffic="canary",
                    stream=streamed,
                    status=up.status_code,
                    started=started,
                    duration=time.perf_counter() - t0,
                    upstream_wait=time.perf_counter() - t0,
                    request=body,
                    response=content,
                    response_truncated=cut,
                    canary={
                        "suite": suite.name,
                        "prompt_id": item.id,
                        "expected": suite.expected,
                        **self._stratum(suite, text),
                    },
                )
            )

    def _stratum(self, suite: Suite, text: str) -> dict[str, str]:
        """Whether the shipped classifier flags a harmful canary as sent: an upstream that imports it can
        answer the flagged ones safely and abliterate the rest, so the rest are a statistic of their
        own (:class:`~proxy.canary.feedback.CanaryFeedback`)."""
        if self.harm is None or suite.expected != "refusal":
            return {}
        try:
            flagged = self.harm.score(text) >= self.harm.threshold
        except Exception:  # the stratum is extra: a classifier failure leaves the canary in its suite only
            logger.exception("canary_stratum_failed", suite=suite.name)
            return {}
        return {"stratum": "flagged" if flagged else "unflagged"}
