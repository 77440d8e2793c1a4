"""Send canaries on a schedule, through the same upstream clients as production.

Each round, for every target model and suite, ``per_round`` canaries go out concurrently (a few
at a time). A canary looks like that model's recent production traffic (system prompt, sampling
parameters, streaming or not; see :class:`~proxy.canary.shape.TrafficShape`) with ``max_tokens``
capped low. Answers go through the same :class:`~proxy.pipeline.Pipeline` as production
(``traffic="canary"``), awaited; its canary-feedback stage feeds the
:class:`~proxy.canary.drift.DriftMonitor`. Canary answers are never relayed to any client.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable

import orjson

from proxy.canary.shape import TrafficShape
from proxy.canary.suites import Suite
from proxy.canary.variants import Variants
from proxy.catalog import ModelCatalog
from proxy.errors import ProxyError
from proxy.exchange import Exchange
from proxy.logs import logger
from proxy.metrics import Metrics
from proxy.pipeline import Pipeline
from proxy.routing import Router
from proxy.settings import CanarySettings

_MAX_ANSWER_BYTES = 1024 * 1024


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
        concurrency: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.canary = canary
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
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    def targets(self) -> list[str]:
        """``canary.models``, else every model the config names exactly plus every model that has had
        production traffic (a glob upstream may list dozens of models no one uses: embeddings, TTS...)."""
        if self.canary.models:
            return list(self.canary.models)
        return list(dict.fromkeys([*self.catalog.exact(), *self.shape.seen]))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="refusal-guard-canaries")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        arrived = self.shape.arrived  # a model seen for the first time is checked at once, not at the next interval
        while True:
            started = time.monotonic()
            arrived.clear()
            try:
                await self.run_round()
            except Exception:  # a canary failure never takes the proxy down
                logger.exception("canary_round_failed")
            jitter = self.rng.uniform(0.9, 1.1)
            wait = max(0.0, self.canary.interval_seconds * jitter - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), wait)

    async def run_round(self) -> None:
        for model in self.targets():
            self.metrics.canary_target.labels(model).set(1)
            for suite in self.suites:  # series exist at zero, so "no errors" is data, not absence
                self.metrics.canary_errors.labels(model, suite.name)
        jobs = [
            self._send(model, suite)
            for model in self.targets()
            for suite in self.suites
            for _ in range(self.canary.per_round)
        ]
        await asyncio.gather(*jobs)
        self.rounds += 1

    async def _send(self, model: str, suite: Suite) -> None:
        async with self._sem:
            item, text = suite.draw(self.rng, self.canary.templates)
            if self.variants is not None:
                self._draws += 1
                text = self.variants.vary(text, self._draws)
            body = self.shape.request(model, text, self.canary)
            started, t0 = self.clock(), time.perf_counter()
            try:
                route = self.router.resolve(model)
                up = await route.upstream.send(
                    "POST", "/chat/completions", orjson.dumps(body), [("content-type", "application/json")]
                )
                try:
                    content = await up.read(_MAX_ANSWER_BYTES)
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
                    path="/v1/chat/completions",
                    endpoint="chat",
                    model=model,
                    model_label=route.label,
                    upstream=route.upstream.name,
                    traffic="canary",
                    stream=bool(body.get("stream")) and up.content_type.startswith("text/event-stream"),
                    status=up.status_code,
                    started=started,
                    duration=time.perf_counter() - t0,
                    upstream_wait=time.perf_counter() - t0,
                    request=body,
                    response=content,
                    canary={"suite": suite.name, "prompt_id": item.id},
                )
            )
