"""One path policy before routing: nothing a client sends leaves /v1/ at the upstream, no query or
fragment is injected by encoding, a trailing slash is still classified, and the pass-through
surface is an allow-list. Requests go out on raw sockets: an HTTP client would normalise the paths."""

from __future__ import annotations

import socket
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.testing import run_server
from tests.conftest import Proxy


class PathRecorder:
    """An upstream that records the raw path and query of everything that reaches it."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, bytes]] = []

        async def any_path(request: Request) -> Response:
            self.seen.append((request.scope["raw_path"], request.scope["query_string"]))
            answer = {
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "I cannot help with that."}}]
            }
            return Response(orjson.dumps(answer), media_type="application/json")

        self.app = Starlette(routes=[Route("/{path:path}", any_path, methods=["GET", "POST"])])


def raw_request(port: int, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP/1.1 request with the target exactly as given; the status and the body."""
    head = f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


@pytest.fixture
def world(start_proxy: Any) -> Any:
    up = PathRecorder()
    with run_server(up.app) as server:
        p: Proxy = start_proxy({"upstreams": [{"name": "u", "base_url": server.url + "/v1", "models": ["m"]}]})
        yield up, p


BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
ESCAPES = [
    "/v1/../admin/secret",
    "/v1/%2e%2e/admin/secret",
    "/v1/..%2fadmin/secret",
    "/v1/..%2Fadmin/secret",
    "/v1/models/../../metrics",
    "/v1/chat/completions/../../../admin",
    "/v1/x%3fa=b",
    "/v1/a%23frag",
    "/v1/a%00b",
    "/v1/a%5c..%5cadmin",
    "/v1/load_lora_adapter",
    "/v1/unload_lora_adapter",
]


@pytest.mark.parametrize("target", ESCAPES)
def test_nothing_leaves_v1_or_injects_a_query(world: Any, target: str) -> None:
    """Each hostile path is refused in the envelope (400 for a bad path, 404 off the allow-list) and
    nothing reaches the upstream."""
    up, p = world
    for method in ("GET", "POST"):
        status, body = raw_request(p.server.port, method, target, BODY if method == "POST" else b"")
        assert status in (400, 404), (method, target, status)
        assert orjson.loads(body)["error"]["code"] in ("invalid_path", "not_found")
    assert up.seen == []


def test_a_normalised_path_is_forwarded_exactly(world: Any) -> None:
    """Dot segments and doubled slashes inside /v1/ resolve; what reaches the upstream is the resolved path."""
    up, p = world
    status, _ = raw_request(p.server.port, "POST", "/v1//embeddings/../embeddings", BODY)
    assert status == 200
    assert up.seen == [(b"/v1/embeddings", b"")]


def test_a_trailing_slash_is_still_classified(world: Any) -> None:
    """``/v1/chat/completions/`` is the chat endpoint: relayed and judged."""
    up, p = world
    status, _ = raw_request(p.server.port, "POST", "/v1/chat/completions/", BODY)
    assert status == 200 and up.seen == [(b"/v1/chat/completions", b"")]
    assert p.wait_for(
        lambda: (
            p.metric("refusal_guard_responses_total", model="m", upstream="u", traffic="production", verdict="refusal")
            == 1
        )
    )


def test_an_upstream_admin_path_can_be_allowed_explicitly(start_proxy: Any) -> None:
    """Off the default allow-list, a path is relayed once the config lists it."""
    up = PathRecorder()
    with run_server(up.app) as server:
        p: Proxy = start_proxy(
            {
                "upstreams": [{"name": "u", "base_url": server.url + "/v1", "models": ["m"]}],
                "passthrough": ["embeddings", "load_lora_adapter"],
            }
        )
        assert raw_request(p.server.port, "POST", "/v1/load_lora_adapter", BODY)[0] == 200
        assert raw_request(p.server.port, "POST", "/v1/moderations", BODY)[0] == 404
    assert up.seen == [(b"/v1/load_lora_adapter", b"")]
