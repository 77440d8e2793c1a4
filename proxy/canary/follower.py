"""A fleet proxy runs no canaries: it follows the canary-runner's quarantine decisions."""

from __future__ import annotations

import asyncio

import httpx

from proxy.canary.drift import DriftMonitor
from proxy.logs import logger


class Follower:
    """Poll ``runner_url``'s ``/canary/state`` every ``every / 2`` seconds (at least 1) and adopt it."""

    def __init__(self, runner_url: str, drift: DriftMonitor, every: float) -> None:
        self.url = runner_url.rstrip("/") + "/canary/state"
        self.drift = drift
        self.every = max(1.0, every / 2)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="refusal-guard-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                try:
                    r = await client.get(self.url)
                    r.raise_for_status()
                    self.drift.follow(r.json())
                except (httpx.HTTPError, ValueError) as exc:
                    logger.warning("canary_runner_unreachable", error=type(exc).__name__)
                await asyncio.sleep(self.every)
