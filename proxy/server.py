"""How the proxy runs under uvicorn: one server configuration for ``serve``, the workers and the
canary runner, and the loopback helpers the worker supervisor needs to start its runner."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx

from proxy.settings import EdgeSettings

# proxy_headers off: the proxy never uses the client's address, and parsing X-Forwarded-For on
# every request is a layer the hot path does not need.
SERVER: dict[str, Any] = {
    "log_level": "warning",
    "access_log": False,
    "proxy_headers": False,
    "timeout_graceful_shutdown": 30,
}


def options(edge: EdgeSettings, *, workers: bool = False) -> dict[str, Any]:
    """uvicorn's options for a server of the proxy's: :data:`SERVER` and the edge's limits
    (:mod:`proxy.edge`). Worker processes import the protocol by name; each sets its limits
    (:func:`proxy.workers.worker_app`)."""
    from proxy.edge import uvicorn_options

    edge_options = uvicorn_options(edge)
    if workers:
        edge_options["http"] = "proxy.edge:EdgeProtocol"
    return {**SERVER, **edge_options}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers with a status below 500; raise RuntimeError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")
