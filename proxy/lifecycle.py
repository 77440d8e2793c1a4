"""The app's lifespan: what starts after the server is up, and stops, drained, before it exits."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import multiprocess

from detectors import Detector
from proxy.audit.writer import AuditWriter
from proxy.canary.follower import Follower
from proxy.canary.notify import Notifier
from proxy.canary.scheduler import CanaryScheduler
from proxy.catalog import ModelCatalog
from proxy.logs import logger
from proxy.pipeline import Pipeline
from proxy.upstream import Upstream


@dataclass
class Lifecycle:
    """Start the audit writer, the pipeline, canaries or the fleet follower; stop them in reverse."""

    role: str
    detector: Detector
    upstreams: Sequence[Upstream]
    pipeline: Pipeline
    catalog: ModelCatalog
    notifier: Notifier
    audit: AuditWriter | None
    scheduler: CanaryScheduler | None
    follower: Follower | None
    metrics_dir: str | None

    @asynccontextmanager
    async def __call__(self, app: Any) -> AsyncIterator[None]:
        if self.audit is not None:
            self.audit.start()
        self.pipeline.start()
        await self.catalog.refresh()  # learn the upstreams' own model names for metric labels
        for part in (self.scheduler, self.follower):
            if part is not None:
                part.start()
        # Everything loaded so far (detector vocabulary, suites, modules) lives as long as the process:
        # move it out of the collector's reach, or each full collection walks it (~40 ms here, a p99 stall).
        gc.collect()
        gc.freeze()
        logger.info(
            "started",
            role=self.role,
            upstreams=[u.name for u in self.upstreams],
            detector=self.detector.name,
            detector_version=self.detector.version,
            canaries=self.scheduler is not None,
        )
        try:
            yield
        finally:
            for part in (self.scheduler, self.follower):
                if part is not None:
                    await part.stop()
            await self.pipeline.stop()
            await self.notifier.aclose()
            if self.audit is not None:
                await asyncio.to_thread(self.audit.stop)
            for u in self.upstreams:
                await u.aclose()
            if self.metrics_dir:
                multiprocess.mark_process_dead(os.getpid(), path=self.metrics_dir)  # type: ignore[no-untyped-call]
            logger.info("stopped")
