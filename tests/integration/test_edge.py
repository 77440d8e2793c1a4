"""The edge, byte by byte over raw sockets (no client that would normalise or refuse first): header
size and count limits (431), header and body timeouts and the body's minimum rate (408), the
keep-alive idle timeout, the HTTP server's own framing errors in the envelope, clients that vanish
mid-body (a counted 499, one log line, no traceback), header values relayed byte for byte, and
audit records that keep headers within a bound."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.testing import ServerThread, audit_records, run_server
from reference_upstream.app import create_sim_app
from tests.conftest import Proxy
from tests.upstreams import Recorder

CHAT = b'{"model": "sim-model", "messages": [{"role": "user", "content": "How do I kill a Python process?"}]}'


@pytest.fixture
def recorded() -> Iterator[tuple[Recorder, ServerThread]]:
    rec = Recorder(create_sim_app("safe", models=("sim-model",)))
    with run_server(rec) as s:
        yield rec, s


def start(start_proxy: Any, upstream: ServerThread, **edge: Any) -> Proxy:
    p: Proxy = start_proxy(
        {"upstreams": [{"name": "sim", "base_url": upstream.url + "/v1", "models": ["sim-model"]}], "edge": edge}
    )
    return p


def request(body: bytes = CHAT, *headers: bytes, length: int | None = None) -> bytes:
    head = [b"POST /v1/chat/completions HTTP/1.1", b"Host: proxy", b"Content-Type: application/json", *headers]
    head.append(b"Content-Length: " + str(len(body) if length is None else length).encode())
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def exchange(p: Proxy, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the proxy sends until it closes (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", p.server.port), timeout=timeout) as s:
        s.sendall(data)
        return read_all(s)


def read_all(s: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def status_and_json(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def served_normally(p: Proxy) -> bool:
    status, data = status_and_json(exchange(p, request(CHAT, b"Connection: close")))
    return status == 200 and bool(data["choices"][0]["message"]["content"])


def test_an_8_mb_header_block_gets_431(recorded: tuple[Recorder, ServerThread], start_proxy: Any) -> None:
    """8 MB of headers: a 431 in the envelope as soon as the limit is passed (not after reading it
    all), the connection closed, nothing reaching the upstream; the proxy serves on."""
    rec, up = recorded
    p = start(start_proxy, up)
    with socket.create_connection(("127.0.0.1", p.server.port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nX-Big: ")
        sent = 0
        try:
            while sent < 8 * 1024 * 1024:
                s.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw = read_all(s)
    status, data = status_and_json(raw)
    assert status == 431 and data["error"]["code"] == "request_header_fields_too_large"
    assert b"connection: close" in raw.lower()
    assert sent < 8 * 1024 * 1024 or raw  # refused early: usually before the client could send it all
    assert rec.paths == []
    assert served_normally(p)


def test_too_many_header_fields_get_431(recorded: tuple[Recorder, ServerThread], start_proxy: Any) -> None:
    rec, up = recorded
    p = start(start_proxy, up, max_headers=20)
    many = [f"X-H{i}: v".encode() for i in range(30)]
    status, data = status_and_json(exchange(p, request(CHAT, *many)))
    assert status == 431 and "header fields" in data["error"]["message"]
    status, _ = status_and_json(exchange(p, request(CHAT, *many[:10], b"Connection: close")))
    assert status == 200 and len(rec.paths) == 1


def test_a_stalled_header_block_gets_408(recorded: tuple[Recorder, ServerThread], start_proxy: Any) -> None:
    """Slowloris: headers begun and never finished, or a connection that never sends a byte."""
    _, up = recorded
    p = start(start_proxy, up, header_timeout=1.0)
    t0 = time.monotonic()
    status, data = status_and_json(exchange(p, b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nX-A: "))
    assert status == 408 and data["error"]["code"] == "request_timeout"
    assert 0.9 < time.monotonic() - t0 < 5
    status, _ = status_and_json(exchange(p, b""))
    assert status == 408


def test_fifty_stalled_half_bodies_are_cut_while_others_are_served(
    recorded: tuple[Recorder, ServerThread], start_proxy: Any
) -> None:
    """50 clients send half a body and stall: each gets a 408 after the body timeout, and the
    connection is closed; meanwhile ordinary requests are answered at once."""
    _, up = recorded
    p = start(start_proxy, up, body_timeout=1.5, body_min_rate=0)
    socks = []
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", p.server.port), timeout=15)
        s.sendall(request(CHAT[:40], length=len(CHAT)))
        socks.append(s)
    t0 = time.monotonic()
    assert served_normally(p) and time.monotonic() - t0 < 1.4  # served while the 50 stall
    answers: list[bytes] = [b""] * 50

    def read(i: int) -> None:
        answers[i] = read_all(socks[i])

    threads = [threading.Thread(target=read, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    for s in socks:
        s.close()
    assert all(status_and_json(a)[0] == 408 for a in answers), {a[:40] for a in answers}
    assert p.wait_for(
        lambda: p.metric("refusal_guard_requests_total", model="unrouted", upstream="none", code="408") == 50
    )


def test_a_trickled_body_under_the_minimum_rate_gets_408(
    recorded: tuple[Recorder, ServerThread], start_proxy: Any
) -> None:
    """One byte every 0.2 s never trips the idle timeout (1 s), but is below 50 bytes/s: cut after
    about 1 s plus what its bytes bought."""
    _, up = recorded
    p = start(start_proxy, up, body_timeout=1.0, body_min_rate=50)
    with socket.create_connection(("127.0.0.1", p.server.port), timeout=10) as s:
        s.sendall(request(b"", length=len(CHAT)))
        t0 = time.monotonic()
        try:
            for byte in CHAT:
                s.sendall(bytes([byte]))
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw = read_all(s)
    assert status_and_json(raw)[0] == 408
    assert time.monotonic() - t0 < 0.2 * len(CHAT)


def test_fifty_clients_leaving_mid_body_leave_no_traceback(
    recorded: tuple[Recorder, ServerThread], start_proxy: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    """Each is a 499 in the metrics and one info line in the log; no traceback, no error line."""
    _, up = recorded
    p = start(start_proxy, up)
    for _ in range(50):
        with socket.create_connection(("127.0.0.1", p.server.port), timeout=5) as s:
            s.sendall(request(CHAT[:40], length=len(CHAT)))
    labels = {"model": "unrouted", "upstream": "none", "code": "499"}
    assert p.wait_for(lambda: p.metric("refusal_guard_requests_total", **labels) == 50)
    time.sleep(0.3)
    out, err = capfd.readouterr()
    logged = out + err
    assert "Traceback" not in logged and "unhandled_error" not in logged
    lines = [line for line in logged.splitlines() if "status=499" in line]
    assert len(lines) == 50 and all("[info" in line for line in lines)


def test_framing_errors_get_the_envelope(
    recorded: tuple[Recorder, ServerThread], start_proxy: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    """What httptools cannot parse is answered by the proxy's protocol in the envelope, not uvicorn's
    plain text; each refusal is one info line (not uvicorn's warning)."""
    _, up = recorded
    p = start(start_proxy, up)
    for bad in (
        b"GARBAGE\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ):
        raw = exchange(p, bad)
        status, data = status_and_json(raw)
        assert status == 400 and b"application/json" in raw, raw[:200]
        if bad.startswith(b"POST /v1/messages"):
            assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
        else:
            assert data["error"]["code"] == "invalid_http"
    logged = "".join(capfd.readouterr())
    assert "Invalid HTTP request" not in logged
    assert len([line for line in logged.splitlines() if "edge_refused" in line and "[info" in line]) == 4


def test_an_idle_kept_alive_connection_is_closed(recorded: tuple[Recorder, ServerThread], start_proxy: Any) -> None:
    _, up = recorded
    p = start(start_proxy, up, keepalive_timeout=0.5)
    with socket.create_connection(("127.0.0.1", p.server.port), timeout=5) as s:
        s.sendall(request())
        t0 = time.monotonic()
        raw = read_all(s)  # the answer, then the close once the connection sat idle
    assert raw.startswith(b"HTTP/1.1 200") and 0.4 < time.monotonic() - t0 < 3


def test_header_values_are_relayed_byte_for_byte(recorded: tuple[Recorder, ServerThread], start_proxy: Any) -> None:
    """A UTF-8 value reaches the upstream as the same bytes (it once arrived double-encoded); a value
    that is not UTF-8 cannot be relayed unchanged through the upstream client, so it is refused."""
    rec, up = recorded
    p = start(start_proxy, up)
    value = "café naïve 日本".encode()
    assert exchange(p, request(CHAT, b"X-Note: " + value, b"Connection: close")).startswith(b"HTTP/1.1 200")
    assert rec.headers[-1]["x-note"].encode("latin-1") == value
    status, data = status_and_json(exchange(p, request(CHAT, b"X-Note: caf\xe9", b"Connection: close")))
    assert status == 400 and "UTF-8" in data["error"]["message"]


def test_audit_records_keep_headers_within_a_bound(sim: ServerThread, start_proxy: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/audit.db"
    p: Proxy = start_proxy(
        {
            "upstreams": [{"name": "sim", "base_url": sim.url + "/v1", "models": ["sim-model"]}],
            "audit": {"enabled": True, "url": url, "flush_seconds": 0.05},
            "edge": {"max_audit_header_chars": 1024},
        }
    )
    big = b"X-Big: " + b"b" * 40_000
    assert exchange(p, request(CHAT, b"X-Small: s", big, b"Connection: close")).startswith(b"HTTP/1.1 200")

    assert p.wait_for(lambda: len(audit_records(url)) == 1)
    headers = audit_records(url)[0]["headers"]
    assert headers["x-small"] == "s" and headers["x-refusal-guard-truncated"].endswith("characters")
    assert sum(len(k) + len(v) for k, v in headers.items() if k != "x-refusal-guard-truncated") <= 1024
