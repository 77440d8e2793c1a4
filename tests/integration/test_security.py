"""The claims of docs/security.md, one test each (the rest are named there, in the tests that hold them)."""

from __future__ import annotations

import hmac
import threading
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy.auth import ClientAuth
from proxy.settings import ClientKey
from proxy.testing import ServerThread, run_server
from tests.conftest import Proxy
from tests.upstreams import TestUpstream

MSGS = [{"role": "user", "content": "hi"}]
ADMIN = "admin-key-0123456789"
CLIENT = "sk-client-0123456789"


class Recorder:
    """A server that must never be contacted (an attacker's), or one that redirects to it."""

    def __init__(self, redirect_to: str | None = None) -> None:
        self.hits: list[str] = []
        self.lock = threading.Lock()
        self.redirect_to = redirect_to
        self.app = Starlette(routes=[Route("/{path:path}", self.any, methods=["GET", "POST"])])

    async def any(self, request: Request) -> Response:
        with self.lock:
            self.hits.append(request.url.path + " " + request.headers.get("authorization", ""))
        if self.redirect_to:
            return Response(status_code=307, headers={"location": self.redirect_to + "/v1/chat/completions"})
        return JSONResponse({"stolen": True})


@pytest.fixture
def keyed(test_upstream: tuple[TestUpstream, ServerThread], start_proxy: Any) -> Proxy:
    _, server = test_upstream
    proxy: Proxy = start_proxy(
        {
            "admin_key_sha256": ClientKey.digest(ADMIN),
            "client_keys": [{"id": "team-a", "sha256": ClientKey.digest(CLIENT)}],
            "upstreams": [{"name": "t", "base_url": server.url + "/v1", "models": ["*"]}],
        }
    )
    return proxy


def test_keys_are_compared_in_constant_time_against_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every configured key is compared (no early exit on a match) with hmac.compare_digest, on digests."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    auth = ClientAuth([ClientKey(id=f"k{i}", sha256=ClientKey.digest(f"key-{i}")) for i in range(5)])
    assert auth.check("Bearer key-0", None) == "k0"  # the first key matches...
    assert len(calls) == 5  # ...and all five were still compared
    assert all(len(a) == len(b) == 32 for a, b in calls)  # SHA-256 digests, never the key itself


def test_config_holds_digests_not_keys() -> None:
    """A client key entry takes a SHA-256 hex digest; a plain key is refused at load."""
    with pytest.raises(ValueError):
        ClientKey(id="a", sha256="sk-plain-text-key")


def test_admin_endpoints_need_the_admin_key_not_a_client_key(keyed: Proxy) -> None:
    url = keyed.url + "/admin/quarantine/echo"
    for headers in ({}, {"authorization": f"Bearer {CLIENT}"}, {"authorization": "Bearer wrong"}):
        assert httpx.post(url, headers=headers).status_code == 401
    r = httpx.post(url, headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200 and r.json() == {"model": "echo", "quarantined": True, "stored": True}
    cleared = httpx.post(url + "/clear", headers={"authorization": f"Bearer {ADMIN}"})
    assert cleared.status_code == 200 and cleared.json()["released"] is True


@pytest.mark.parametrize("header", ["authorization", "api-key", "x-api-key"])
def test_every_route_reads_the_key_from_the_same_headers(keyed: Proxy, header: str) -> None:
    """A key in any of the headers one route accepts works on every route (the anthropic SDK lists
    models with ``x-api-key``), and a wrong one is refused on every route."""
    for key, want in ((CLIENT, 200), ("wrong", 401)):
        value = f"Bearer {key}" if header == "authorization" else key
        h = {header: value}
        assert httpx.get(keyed.url + "/v1/models", headers=h).status_code == want
        assert httpx.get(keyed.url + "/v1/models/echo", headers=h).status_code in ({200, 404} if want == 200 else {401})
        chat = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(keyed.url + "/v1/chat/completions", json=chat, headers=h).status_code == want
    admin = {header: f"Bearer {ADMIN}" if header == "authorization" else ADMIN}
    assert httpx.post(keyed.url + "/admin/quarantine/echo/clear", headers=admin).status_code == 200


def test_admin_endpoints_are_off_without_an_admin_key(sim_proxy: Proxy) -> None:
    r = httpx.post(sim_proxy.url + "/admin/quarantine/sim-model", headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_no_answer_echoes_a_presented_key(keyed: Proxy) -> None:
    """A wrong key, or a key in a body field, is never repeated back."""
    secret = "sk-never-echo-this-4242"
    r = httpx.post(
        keyed.url + "/v1/chat/completions",
        json={"model": "echo", "messages": MSGS},
        headers={"authorization": f"Bearer {secret}"},
    )
    assert r.status_code == 401 and secret not in r.text and secret not in str(r.headers)
    r = httpx.post(
        keyed.url + "/v1/chat/completions",
        json={"model": secret, "messages": "not-a-list"},
        headers={"authorization": f"Bearer {CLIENT}"},
    )
    assert r.status_code == 400 and secret not in str(r.headers)


def test_requests_cannot_choose_where_the_proxy_connects(
    test_upstream: tuple[TestUpstream, ServerThread], start_proxy: Any
) -> None:
    """Host headers, absolute-form targets, odd paths and URL-like model names all go to the configured upstream."""
    up, server = test_upstream
    attacker = Recorder()
    with run_server(attacker.app) as evil:
        p: Proxy = start_proxy({"upstreams": [{"name": "t", "base_url": server.url + "/v1", "models": ["*"]}]})
        host = evil.url.removeprefix("http://")
        with httpx.Client(base_url=p.url) as c:
            c.post("/v1/chat/completions", json={"model": "echo", "messages": MSGS}, headers={"host": host})
            c.post("/v1/chat/completions", json={"model": evil.url + "/v1", "messages": MSGS})
            assert c.get(f"/v1/{evil.url}/v1/models").status_code == 404  # not in the pass-through allow-list
            assert c.get("/v1/..%2f..%2fadmin").status_code == 400  # an encoded slash (proxy.paths)
            c.post("/v1/embeddings", json={"model": "x", "input": "y", "base_url": evil.url, "api_base": evil.url})
        assert len(up.seen) >= 2  # the chat requests reached the configured upstream...
        assert attacker.hits == []  # ...and nothing reached anything else


def test_upstream_redirects_are_not_followed(start_proxy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upstream's redirect goes back to the client; the proxy (and its upstream key) never follows it."""
    monkeypatch.setenv("RG_SECURITY_UPSTREAM_KEY", "sk-upstream-secret")
    attacker = Recorder()
    with run_server(attacker.app) as evil:
        redirecting = Recorder(redirect_to=evil.url)
        with run_server(redirecting.app) as up:
            p: Proxy = start_proxy(
                {
                    "upstreams": [
                        {
                            "name": "r",
                            "base_url": up.url + "/v1",
                            "models": ["*"],
                            "api_key_env": "RG_SECURITY_UPSTREAM_KEY",
                        }
                    ]
                }
            )
            r = httpx.post(p.url + "/v1/chat/completions", json={"model": "m", "messages": MSGS})
            assert r.status_code == 307 and r.headers["location"].startswith(evil.url)
            assert [h for h in redirecting.hits if "chat" in h] == ["/v1/chat/completions Bearer sk-upstream-secret"]
            assert attacker.hits == []
            assert "sk-upstream-secret" not in r.text and "sk-upstream-secret" not in str(r.headers)


def test_no_header_injection_through_model_or_request_id(keyed: Proxy) -> None:
    auth = {"authorization": f"Bearer {CLIENT}"}
    r = httpx.post(
        keyed.url + "/v1/chat/completions",
        json={"model": "echo\r\nx-injected: 1", "messages": MSGS},
        headers=auth,
    )
    assert "x-injected" not in r.headers
    odd = "abc x-injected: 1"
    headers = {**auth, "x-request-id": odd}
    r = httpx.post(keyed.url + "/v1/chat/completions", json={"model": "echo", "messages": MSGS}, headers=headers)
    assert "x-injected" not in r.headers and r.headers["x-request-id"] != odd  # replaced, not echoed


def test_metric_labels_stay_bounded_under_thousands_of_model_names(keyed: Proxy) -> None:
    """2,000 distinct model names through a ``*`` upstream: the model label takes a handful of values."""
    auth = {"authorization": f"Bearer {CLIENT}"}
    with httpx.Client(base_url=keyed.url, headers=auth) as c:
        for i in range(2000):
            c.post("/v1/chat/completions", json={"model": f"attacker-model-{i}", "messages": MSGS})
        c.post("/v1/chat/completions", json={"model": "echo", "messages": MSGS})
        text = c.get("/metrics").text
    models = {
        s.labels["model"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if "model" in s.labels
    }
    assert models <= {"*", "echo", "unrouted"}, sorted(models)[:10]
    assert len(text) < 200_000


def echo_app() -> Starlette:
    """An upstream that answers every chat request with its last user message."""

    async def chat(request: Request) -> Response:
        body = await request.json()
        text = body["messages"][-1]["content"]
        message = {"role": "assistant", "content": text}
        return JSONResponse({"object": "chat.completion", "choices": [{"index": 0, "message": message}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def test_canary_prompts_and_answers_never_reach_a_client(start_proxy: Any) -> None:
    """Canaries run beside client traffic on the same upstream; every client gets exactly its own answer."""
    with run_server(echo_app()) as server:
        p: Proxy = start_proxy(
            {
                "upstreams": [{"name": "echo", "base_url": server.url + "/v1", "models": ["echo"]}],
                "canary": {"enabled": True, "interval_seconds": 0.01, "per_round": 2},
            }
        )
        answers = []
        with httpx.Client(base_url=p.url) as c:
            for i in range(200):
                prompt = f"client prompt {i}"
                r = c.post(
                    "/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": prompt}]}
                )
                answers.append((prompt, r.json()["choices"][0]["message"]["content"], r.headers["x-request-id"]))
        canaries = sum(
            p.metric("refusal_guard_responses_total", model="echo", upstream="echo", traffic="canary", verdict=v)
            for v in ("refusal", "partial_refusal", "compliance")
        )
        assert canaries >= 20  # canaries did run meanwhile
        assert all(prompt == answer for prompt, answer, _ in answers)
        assert not any(rid.startswith("canary") for _, _, rid in answers)
