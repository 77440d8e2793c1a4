"""Send canaries on a schedule, through the same upstream clients as production.

Each round, for every target model and suite, ``per_round`` canaries go out concurrently (a few
at a time). A canary looks like that model's recent production traffic (system prompt, sampling
parameters, streaming or not; see :class:`TrafficShape`) with ``max_tokens`` capped low. Answers
are judged by the side channel like any response (``traffic="canary"``) and fed to the
:class:`~proxy.canary.drift.DriftMonitor`. Canary answers are never relayed to any client.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from proxy.canary.drift import DriftMonitor
from proxy.canary.suites import Suite
from proxy.classify import Exchange, SideChannel
from proxy.errors import ProxyError
from proxy.logs import logger
from proxy.metrics import Metrics
from proxy.routing import Router
from proxy.settings import CanarySettings
from proxy.upstream import UpstreamStreamError

_SHAPED_PARAMS = (
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "n",
    "max_tokens",
    "max_completion_tokens",
)
_MAX_ANSWER_BYTES = 1024 * 1024


class TrafficShape:
    """The system prompt and sampling parameters of each model's latest production chat request."""

    def __init__(self) -> None:
        self._shapes: dict[str, dict[str, Any]] = {}
        self.seen: list[str] = []  # models with production traffic, in order of first sight
        self.on_new_model: Callable[[str], None] | None = None

    def observe(self, ex: Exchange) -> None:
        """Side-channel listener: remember the shape of a production chat request."""
        if ex.traffic != "production" or ex.endpoint != "chat" or not ex.request or ex.status >= 400:
            return
        shape = {k: ex.request[k] for k in _SHAPED_PARAMS if k in ex.request}
        system = [
            m
            for m in ex.request.get("messages") or []
            if isinstance(m, dict) and m.get("role") in ("system", "developer")
        ]
        if system:
            shape["system"] = system[0]
        label = ex.model_label
        if label not in self._shapes and not any(c in label for c in "*?["):
            self.seen.append(label)  # a bounded set: labels are config names or names the upstream lists
            if self.on_new_model is not None:
                self.on_new_model(label)
        self._shapes[label] = shape
        if ex.model and ex.model != ex.model_label:
            self._shapes[ex.model] = shape

    def request(self, model: str, text: str, canary: CanarySettings) -> dict[str, Any]:
        """A chat request carrying ``text`` that looks like ``model``'s production traffic."""
        shape = dict(self._shapes.get(model, {}))
        system = shape.pop("system", None)
        if canary.system_prompt is not None:
            system = {"role": "system", "content": canary.system_prompt}
        body: dict[str, Any] = {
            "model": model,
            "messages": ([system] if system else []) + [{"role": "user", "content": text}],
        }
        body.update({k: v for k, v in shape.items() if k not in ("max_tokens", "max_completion_tokens", "n")})
        limit = min(
            v
            for v in (shape.get("max_tokens"), shape.get("max_completion_tokens"), canary.max_tokens)
            if isinstance(v, int)
        )
        body["max_completion_tokens" if "max_completion_tokens" in shape else "max_tokens"] = limit
        return body


class CanaryScheduler:
    def __init__(
        self,
        canary: CanarySettings,
        suites: list[Suite],
        router: Router,
        side: SideChannel,
        drift: DriftMonitor,
        metrics: Metrics,
        shape: TrafficShape,
        *,
        concurrency: int = 4,
    ) -> None:
        self.canary = canary
        self.suites = suites
        self.router = router
        self.side = side
        self.drift = drift
        self.metrics = metrics
        self.shape = shape
        self.rng = random.Random(canary.seed)
        self._sem = asyncio.Semaphore(concurrency)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.rounds = 0
        shape.on_new_model = self.poke

    def targets(self) -> list[str]:
        """``canary.models``, else every model the config names exactly plus every model that has had
        production traffic (a glob upstream may list dozens of models no one uses: embeddings, TTS...)."""
        if self.canary.models:
            return list(self.canary.models)
        exact = [m for u in self.router.upstreams for m in u.config.models if not any(c in m for c in "*?[")]
        return list(dict.fromkeys([*exact, *self.shape.seen]))

    def poke(self, model: str | None = None) -> None:
        """Run a round now (a model seen for the first time is checked at once, not at the next interval)."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="refusal-guard-canaries")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.run_round()
            except Exception:  # a canary failure never takes the proxy down
                logger.exception("canary_round_failed")
            jitter = self.rng.uniform(0.9, 1.1)
            wait = max(0.0, self.canary.interval_seconds * jitter - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()

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
            body = self.shape.request(model, text, self.canary)
            started, t0 = time.time(), time.perf_counter()
            try:
                route = self.router.resolve(model)
                up = await route.upstream.send(
                    "POST", "/chat/completions", orjson.dumps(body), [("content-type", "application/json")]
                )
                try:
                    content = await up.read(_MAX_ANSWER_BYTES)
                finally:
                    await up.aclose()
            except (ProxyError, UpstreamStreamError) as exc:
                self.metrics.canary_errors.labels(model, suite.name).inc()
                logger.warning("canary_failed", model=model, suite=suite.name, error=str(exc))
                return
            if up.status_code >= 400:
                self.metrics.canary_errors.labels(model, suite.name).inc()
                logger.warning("canary_failed", model=model, suite=suite.name, status=up.status_code)
                return
            ex = Exchange(
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
            ex.on_judged = lambda judged: self._judged(model, suite, judged)
            self.side.submit(ex)

    def _judged(self, model: str, suite: Suite, ex: Exchange) -> None:
        if not ex.verdicts:
            self.metrics.canary_errors.labels(model, suite.name).inc()
            return
        self.drift.record(model, suite, ex.verdicts[0].label)
