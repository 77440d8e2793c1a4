"""Helpers for testing the proxy and things built on it, as ``structlog.testing`` or
``starlette.testclient``: real servers on loopback in a thread, and waiting on the pipeline.

Nothing in the product imports this module.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from proxy.exchange import Exchange
from proxy.server import free_port, wait_http

__all__ = ["ServerThread", "exchange", "free_port", "run_server", "wait_for", "wait_http", "wait_until"]


def audit_records(url: str, traffic: str = "production") -> list[dict[str, Any]]:
    """The records of one kind of traffic in the audit log at ``url``, in storage order."""
    from proxy.audit.sinks import open_sink

    sink = open_sink(url)
    try:
        return [r for r in sink.read() if r.get("traffic") == traffic]
    finally:
        sink.close()


def exchange(**fields: Any) -> Exchange:
    """A production chat exchange for model ``m`` on upstream ``u``, answered 200; ``fields`` override.

    >>> exchange(traffic="canary").traffic
    'canary'
    """
    base: dict[str, Any] = {
        "request_id": "r",
        "method": "POST",
        "path": "/v1/chat/completions",
        "endpoint": "chat",
        "model": "m",
        "model_label": "m",
        "upstream": "u",
        "traffic": "production",
        "stream": False,
        "status": 200,
        "started": 0.0,
        "duration": 0.0,
        "upstream_wait": 0.0,
    }
    return Exchange(**{**base, **fields})


class ServerThread:
    """A uvicorn server on 127.0.0.1 and an OS-chosen port, run in a background thread."""

    def __init__(self, app: ASGIApp, **config: Any) -> None:
        cfg = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
            **config,
        )
        self.app = app
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self._started = threading.Event()

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:  # uvicorn has no event for this; its own tests poll it too
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@contextlib.contextmanager
def run_server(app: ASGIApp, **config: Any) -> Iterator[ServerThread]:
    """Serve ``app`` for the duration of the block."""
    s = ServerThread(app, **config).start()
    try:
        yield s
    finally:
        s.stop()


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, app: Any = None) -> bool:
    """Wait until ``predicate()`` is true, or ``timeout`` seconds.

    With ``app`` (a proxy app), the check runs each time an exchange comes out of its pipeline or an
    audit batch is written (``app.state.progress``), so a test wakes when the state it waits for can
    have changed; a re-check every 50 ms covers state that moves elsewhere (another process).
    """
    progress = getattr(getattr(app, "state", None), "progress", None)
    deadline = time.monotonic() + timeout
    while not predicate():
        left = deadline - time.monotonic()
        if left <= 0:
            return bool(predicate())
        if progress is not None:
            with progress:
                progress.wait(min(left, 0.05))
        else:
            time.sleep(min(left, 0.01))
    return True


def wait_until(check: Callable[[], object], timeout: float, interval: float = 0.5) -> bool:
    """Poll ``check`` (which may raise ``httpx.HTTPError`` while a server comes up) every ``interval``
    seconds; for state outside this process (Prometheus, Alertmanager) that has no event to wait on."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    return False
