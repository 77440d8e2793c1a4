"""ASGI responses that relay an upstream's answer and report back once the client has it.

``BodyRelay`` sends a complete body; ``StreamRelay`` forwards each upstream chunk the moment it
arrives (no buffering) while keeping a copy for the classifier. Both tell the request's
:class:`~proxy.handoff.Handoff` once the last byte left: metrics, logging and classification run
from there, off the hot path.
A client that disconnects cancels the upstream request (see :class:`DisconnectWatch`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from proxy.errors import AuditUnavailable, UpstreamBrokeOff, UpstreamError, sse_error_event
from proxy.exchange import Outcome
from proxy.handoff import Handoff
from proxy.upstream import UpstreamResponse


class DisconnectWatch:
    """Cancel the current task when the client disconnects; swallow that cancellation on exit.

    Used after the request body has been read: the ASGI ``receive`` then only ever yields
    ``http.disconnect``.
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.disconnected = False
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DisconnectWatch:
        task = asyncio.current_task()
        assert task is not None

        async def watch() -> None:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    self.disconnected = True
                    task.cancel()
                    return

        self._watcher = asyncio.get_running_loop().create_task(watch())
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        assert self._watcher is not None
        self._watcher.cancel()
        if self.disconnected and et is asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            return True
        return False


class BodyRelay(Response):
    """A complete response; the hand-off is told after the body went out."""

    def __init__(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, outcome: Outcome, handoff: Handoff
    ) -> None:
        self.status_code = status
        self.body = body
        self.raw_headers = [*headers, (b"content-length", str(len(body)).encode())]
        self.background = None
        self._outcome = outcome
        self._handoff = handoff

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": self.body})
        except OSError:
            self._outcome.disconnected = True
        self._handoff.sent(self._outcome)


class StreamRelay(Response):
    """Relay an upstream SSE stream chunk by chunk; keep up to ``keep`` bytes for classification."""

    def __init__(
        self,
        upstream: UpstreamResponse,
        *,
        keep: int,
        error_event: bytes,
        endpoint: str | None,
        handoff: Handoff,
    ) -> None:
        self.status_code = upstream.status_code
        self.raw_headers = upstream.headers
        self.background = None
        self._upstream = upstream
        self._keep = keep
        self._error_event = error_event
        self._endpoint = endpoint
        self._handoff = handoff

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        up = self._upstream
        out = Outcome(status=self.status_code, body=b"", upstream_wait=up.waited)
        kept: list[bytes] = []
        size = 0
        try:
            async with DisconnectWatch(receive) as watch:
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                chunks = aiter(up.chunks)
                while True:
                    t0 = time.perf_counter()
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    except UpstreamError as exc:
                        # cut off mid-stream is the relay's own kind: the client saw part of an answer
                        out.error = str(exc)
                        out.error_kind = "stream_interrupted" if isinstance(exc, UpstreamBrokeOff) else exc.kind
                        await send({"type": "http.response.body", "body": self._error_event, "more_body": True})
                        break
                    finally:
                        out.upstream_wait += time.perf_counter() - t0
                    if size + len(chunk) <= self._keep:
                        kept.append(chunk)
                        size += len(chunk)
                    else:
                        out.truncated = True
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    if out.first_chunk_at is None:
                        out.first_chunk_at = time.perf_counter()
            out.disconnected = watch.disconnected
            if not out.disconnected:
                if self._handoff.strict:  # strict audit: the stream ends once its record is durable
                    out.body = b"".join(kept)
                    try:
                        await self._handoff.hold(out)
                    except Exception:
                        failed = sse_error_event(AuditUnavailable(), self._endpoint)  # built only when it happens
                        await send({"type": "http.response.body", "body": failed, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except OSError:  # the server reports a client gone away while we were sending
            out.disconnected = True
        finally:
            await asyncio.shield(up.aclose())
            out.body = b"".join(kept)
            self._handoff.sent(out)
