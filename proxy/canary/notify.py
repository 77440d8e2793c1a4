"""Tell people about drift: Alertmanager's ``/api/v2/alerts`` and a generic JSON webhook, with retries.

Fire and forget from the caller's view: a failed notification is logged and counted, never raised.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx

from proxy.logs import logger
from proxy.metrics import Metrics


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class Notifier:
    def __init__(
        self,
        metrics: Metrics,
        *,
        alertmanager_url: str | None,
        webhook_url: str | None,
        attempts: int = 4,
        backoff: float = 0.5,
    ) -> None:
        self.metrics = metrics
        self.alertmanager_url = alertmanager_url.rstrip("/") if alertmanager_url else None
        self.webhook_url = webhook_url
        self.attempts = attempts
        self.backoff = backoff
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def notify(self, event: str, model: str, suite: str | None, detail: dict[str, Any]) -> None:
        """Queue notifications for one transition (``drift``, ``recovered``, ``quarantined``, ``released``)."""
        if not (self.alertmanager_url or self.webhook_url):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self.alertmanager_url:
            self._spawn(
                loop,
                "alertmanager",
                self.alertmanager_url + "/api/v2/alerts",
                [self._alert(event, model, suite, detail)],
            )
        if self.webhook_url:
            body = {"event": event, "model": model, "suite": suite, "time": _now(), **detail}
            self._spawn(loop, "webhook", self.webhook_url, body)

    def _alert(self, event: str, model: str, suite: str | None, detail: dict[str, Any]) -> dict[str, Any]:
        quarantine = event in ("quarantined", "released")
        alert: dict[str, Any] = {
            "labels": {
                "alertname": "RefusalGuardQuarantine" if quarantine else "RefusalGuardCanaryDrift",
                "model": model,
                "severity": "page",
                "source": "refusal-guard",
                **({"suite": suite} if suite else {}),
            },
            "annotations": {
                "summary": f"{model}: " + ("quarantined" if quarantine else f"canary drift on the {suite} suite"),
                "description": ", ".join(f"{k}={v}" for k, v in detail.items()),
            },
            "startsAt": _now(),
        }
        if event in ("recovered", "released"):
            alert["endsAt"] = _now()  # resolves the alert
        return alert

    def _spawn(self, loop: asyncio.AbstractEventLoop, target: str, url: str, body: Any) -> None:
        task = loop.create_task(self._post(target, url, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, target: str, url: str, body: Any) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=5.0)
        for attempt in range(self.attempts):
            try:
                r = await self._client.post(url, json=body)
                if r.status_code < 300:
                    return
                error = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            if attempt + 1 < self.attempts:
                await asyncio.sleep(self.backoff * 2**attempt)
        self.metrics.notify_errors.labels(target).inc()
        logger.warning("notify_failed", target=target, error=error)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._client is not None:
            await self._client.aclose()
