from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm must never reach for the network

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from prometheus_client import CollectorRegistry

from proxy.app import create_app
from proxy.edge import uvicorn_options
from proxy.settings import Settings
from proxy.testing import ServerThread, run_server, wait_for
from reference_upstream.app import create_sim_app
from tests.upstreams import TestUpstream


@dataclass
class Proxy:
    server: ServerThread
    registry: CollectorRegistry
    app: Any

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, **kw: Any) -> openai.OpenAI:
        kw.setdefault("api_key", "unused")
        kw.setdefault("timeout", 20)
        return openai.OpenAI(base_url=self.url + "/v1", max_retries=0, **kw)

    def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> bool:
        """Wait on this proxy's pipeline and audit progress until ``predicate()`` holds."""
        return wait_for(predicate, timeout, app=self.app)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="session")
def sim() -> Iterator[ServerThread]:
    """The reference upstream, shared by the session; tests that switch its mode switch it back."""
    with run_server(create_sim_app("safe", models=("sim-model",))) as s:
        yield s


@pytest.fixture(scope="session")
def llamacpp() -> Iterator[str]:
    """llama.cpp's own server with a real model (tests/llamacpp.py), shared by the session: its base URL."""
    from tests.llamacpp import start

    with start() as url:
        yield url


@pytest.fixture
def start_proxy() -> Iterator[Any]:
    """Start proxies with given settings; all are stopped at the end of the test."""
    started: list[ServerThread] = []

    def start(settings: Settings | dict[str, Any], **kw: Any) -> Proxy:
        if isinstance(settings, dict):
            # drill and audit tests turn these on
            settings = {"canary": {"enabled": False}, "audit": {"enabled": False}, **settings}
            settings = Settings.model_validate(settings)
        registry = kw.pop("registry", None) or CollectorRegistry()
        app = create_app(settings, registry=registry, **kw)
        server = ServerThread(app, **uvicorn_options(settings.edge)).start()
        started.append(server)
        return Proxy(server, registry, app)

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def sim_proxy(sim: ServerThread, start_proxy: Any) -> Proxy:
    return start_proxy({"upstreams": [{"name": "sim", "base_url": sim.url + "/v1", "models": ["sim-model"]}]})


@pytest.fixture
def test_upstream() -> Iterator[tuple[TestUpstream, ServerThread]]:
    up = TestUpstream()
    with run_server(up.app) as s:
        yield up, s
    up.gate.set()


@pytest.fixture
def test_proxy(test_upstream: tuple[TestUpstream, ServerThread], start_proxy: Any) -> Proxy:
    _, server = test_upstream
    return start_proxy(
        {"upstreams": [{"name": "test", "base_url": server.url + "/v1", "models": ["*"], "timeouts": {"read": 1.0}}]}
    )
