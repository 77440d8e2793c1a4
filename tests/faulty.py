"""An upstream that misbehaves on purpose, at the byte level: a raw asyncio TCP server (no framework
would let us send a short body, cut a chunked stream, or stall between headers and body).

The request's ``model`` picks the fault; see :data:`FAULTS`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress

import orjson

Writer = asyncio.StreamWriter
OK_BODY = orjson.dumps(
    {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
    }
)


def head(status: str, content_type: str | None, length: int | None = None, chunked: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status}"]
    if content_type:
        lines.append(f"content-type: {content_type}")
    if length is not None:
        lines.append(f"content-length: {length}")
    if chunked:
        lines.append("transfer-encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def sse(text: str) -> bytes:
    delta = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + orjson.dumps(delta) + b"\n\n"


async def _status(w: Writer, status: str, body: bytes) -> None:
    w.write(head(status, "application/json" if body else None, len(body)) + body)


async def trickle(w: Writer, gap: float) -> None:
    w.write(head("200 OK", "application/json", len(OK_BODY)))
    for i in range(0, len(OK_BODY), 20):
        await w.drain()
        await asyncio.sleep(gap)
        w.write(OK_BODY[i : i + 20])


async def truncated_json(w: Writer) -> None:
    w.write(head("200 OK", "application/json", len(OK_BODY)) + OK_BODY[:40])  # then the connection closes


async def sse_cut(w: Writer) -> None:
    w.write(head("200 OK", "text/event-stream", chunked=True))
    w.write(chunk(sse("Hello")) + chunk(sse(" there")) + chunk(b'data: {"choices": [{"ind'))
    # no terminating chunk: the connection closes mid-event


async def sse_malformed(w: Writer) -> None:
    w.write(head("200 OK", "text/event-stream", chunked=True))
    for line in (
        b"data: {not json\n\n",
        b"event: odd\n\n",
        b": comment\n\n",
        b"data: \xff\xfe\n\n",
        b"data: [DONE]\n\n",
    ):
        w.write(chunk(line))
    w.write(b"0\r\n\r\n")


async def sse_endless(w: Writer) -> None:
    w.write(head("200 OK", "text/event-stream", chunked=True) + chunk(sse("Hello")))
    await w.drain()
    await asyncio.sleep(3600)  # never another byte


async def silent(w: Writer) -> None:
    await asyncio.sleep(3600)  # headers never come


async def close_at_once(w: Writer) -> None:
    return  # the connection closes before any response


async def oversized(w: Writer) -> None:
    filler = b"x" * (2 * 1024 * 1024)
    body = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "' + filler + b'"}}]}'
    w.write(head("200 OK", "application/json", len(body)) + body)


FAULTS: dict[str, Callable[[Writer], Awaitable[None]]] = {
    "status-429-json": lambda w: _status(w, "429 Too Many Requests", b'{"error": {"message": "slow down"}}'),
    "status-429-empty": lambda w: _status(w, "429 Too Many Requests", b""),
    "status-503-json": lambda w: _status(w, "503 Service Unavailable", b'{"error": {"message": "overloaded"}}'),
    "status-500-empty": lambda w: _status(w, "500 Internal Server Error", b""),
    "non-json": lambda w: _status(w, "200 OK", b"<html>upstream proxy error page</html>"),
    "trickle": lambda w: trickle(w, 0.05),
    "trickle-stall": lambda w: trickle(w, 2.0),
    "truncated-json": truncated_json,
    "sse-cut": sse_cut,
    "sse-malformed": sse_malformed,
    "sse-endless": sse_endless,
    "silent": silent,
    "close-at-once": close_at_once,
    "oversized": oversized,
}


async def _handle(reader: asyncio.StreamReader, writer: Writer) -> None:
    try:
        body = orjson.loads(await _read_request(reader) or b"{}")
        fault = FAULTS.get(str(body.get("model", "")), lambda w: _status(w, "200 OK", OK_BODY))
        await fault(writer)
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    raw_head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in raw_head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return await reader.readexactly(length) if length else b""


async def drop_reused(reader: asyncio.StreamReader, writer: Writer) -> None:
    """Answer a connection's first request and keep it open; close it, unanswered, on the second:
    what a client sees when it reuses a pooled connection the server is closing (its idle timeout)."""
    try:
        await _read_request(reader)
        writer.write(head("200 OK", "application/json", len(OK_BODY)) + OK_BODY)
        await writer.drain()
        await _read_request(reader)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


@contextmanager
def faulty_upstream(handler: Callable[[asyncio.StreamReader, Writer], Awaitable[None]] | None = None) -> Iterator[str]:
    """Serve the faults (or ``handler``) on loopback; yields the base URL (``.../v1``)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def main() -> None:
        server = await asyncio.start_server(handler or _handle, "127.0.0.1", 0)
        holder["port"] = server.sockets[0].getsockname()[1]
        holder["server"] = server
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(main(), loop).result(10)
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{holder['port']}/v1"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@contextmanager
def blackhole() -> Iterator[str]:
    """A port whose accept queue is full: a connect to it hangs until the client's timeout."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    held = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        with suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        held.append(c)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        for c in held:
            c.close()
        srv.close()
