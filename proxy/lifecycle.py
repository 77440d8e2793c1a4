"""The app's lifespan: what starts after the server is up, and stops, drained, before it exits."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import multiprocess

from detectors import Detector
from proxy.audit.writer import AuditWriter
from proxy.canary.notify import Notifier
from proxy.canary.suites import Suite
from proxy.catalog import ModelCatalog
from proxy.judging import JudgeRequests
from proxy.logs import logger
from proxy.pipeline import Pipeline
from proxy.state.sync import StateSync
from proxy.telemetry import NoTracing, Tracing
from proxy.upstream import Upstream


@dataclass
class Lifecycle:
    """Start the audit writer, the pipeline and the state sync (which runs canaries while this replica
    leads); stop them in reverse."""

    detector: Detector
    upstreams: Sequence[Upstream]
    pipeline: Pipeline
    catalog: ModelCatalog
    notifier: Notifier
    audit: AuditWriter | None
    sync: StateSync
    metrics_dir: str | None
    tracing: Tracing = field(default_factory=NoTracing)
    judge: JudgeRequests | None = None

    @asynccontextmanager
    async def __call__(self, app: Any) -> AsyncIterator[None]:
        if self.audit is not None:
            self.audit.start()
        self.pipeline.start()
        if self.judge is not None:
            self.judge.start()  # trains the secret head in its own thread
        await self.catalog.refresh()  # learn the upstreams' own model names for metric labels
        await self.sync.start()
        # Everything loaded so far (detector vocabulary, suites, modules) lives as long as the process:
        # move it out of the collector's reach, or each full collection walks it (~40 ms here, a p99 stall).
        gc.collect()
        gc.freeze()
        logger.info(
            "started",
            replica=self.sync.replica,
            leader=self.sync.leading,
            upstreams=[u.name for u in self.upstreams],
            detector=self.detector.name,
            detector_version=self.detector.version,
            canaries=self.sync.scheduler is not None,
        )
        suites = self.sync.scheduler.suites if self.sync.scheduler is not None else []
        if suites and all(s.public for s in suites):  # an upstream that imports this package knows them
            logger.warning(
                "canary_suites_public",
                suites=[s.name for s in suites],
                hint="an upstream that imports refusal-guard knows these prompts and maps their variants "
                "back: add prompts of your own in canary.extra_suites (docs/canaries.md)",
            )
        _warn_near_public([s for s in suites if not s.public])
        try:
            yield
        finally:
            await self.sync.stop()
            await self.pipeline.stop()
            if self.judge is not None:
                await asyncio.to_thread(self.judge.stop)
            await self.notifier.aclose()
            if self.audit is not None:
                await asyncio.to_thread(self.audit.stop)
            for u in self.upstreams:
                await u.aclose()
            await asyncio.to_thread(self.tracing.shutdown)  # what is queued goes out, within its timeout
            if self.metrics_dir:
                multiprocess.mark_process_dead(os.getpid(), path=self.metrics_dir)  # type: ignore[no-untyped-call]
            logger.info("stopped")


def _warn_near_public(suites: Sequence[Suite]) -> None:
    """Your own suites' prompts that read as a shipped one (:mod:`proxy.canary.public`): an upstream
    that imports this package recognises their canaries as it does the shipped suites'."""
    if not suites:
        return
    from proxy.canary.public import PublicPrompts

    public = PublicPrompts()
    for s in suites:
        near = [p.id for p in s.prompts if public.match(p.prompt)]
        if near:
            logger.warning(
                "canary_prompts_near_public",
                suite=s.name,
                prompts=len(near),
                of=len(s.prompts),
                ids=near[:10],
                hint="these read as shipped prompts (most of their words, synonyms aside): an upstream that "
                "imports refusal-guard recognises them; reword or replace them (docs/canaries.md)",
            )
