"""Upstream clients behind one narrow interface: send a request, get status, headers and a body stream.

``OpenAIUpstream`` speaks to any OpenAI-compatible server (vLLM, Ollama, llama.cpp, TGI, OpenAI)
over one pooled ``aiohttp.ClientSession``. Providers that are not OpenAI-compatible go through
:mod:`proxy.litellm_upstream`, the one module that imports litellm. aiohttp's exceptions are
mapped onto the proxy's error tree here, once (:func:`upstream_error`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import yarl

from proxy.errors import (
    ProxyError,
    UpstreamBrokeOff,
    UpstreamError,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from proxy.settings import UpstreamConfig

# Request headers never forwarded: hop-by-hop, the client's credentials, and what the client recomputes.
_DROP_REQUEST = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "cookie",
        "accept-encoding",
        "expect",
        "x-request-id",
    }
)
# Response headers not relayed: hop-by-hop, framing the server recomputes, and cookies.
_DROP_RESPONSE = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "content-encoding",
        "date",
        "server",
        "set-cookie",
    }
)


@dataclass
class UpstreamResponse:
    """An upstream's answer once its headers arrived; the body is read or iterated once."""

    status_code: int
    headers: list[tuple[bytes, bytes]]
    content_type: str
    chunks: AsyncIterator[bytes]
    _close: object = field(default=None, repr=False)
    waited: float = 0.0  # seconds spent waiting on the upstream so far
    retried: bool = False  # sent twice: the first pooled connection turned out closed

    async def read(self, limit: int) -> bytes:
        """The whole body, up to ``limit`` bytes (more is an error, not a silent cut)."""
        parts, size = [], 0
        async for chunk in self.chunks:
            size += len(chunk)
            if size > limit:
                raise UpstreamResponseTooLarge(f"upstream response exceeds {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def aclose(self) -> None:
        if self._close is not None:
            await self._close()  # type: ignore[operator]


class Upstream(Protocol):
    """Where requests for a set of models go."""

    config: UpstreamConfig

    @property
    def name(self) -> str: ...

    async def send(
        self, method: str, path: str, body: bytes, headers: Iterable[tuple[str, str]], query: str = ""
    ) -> UpstreamResponse:
        """Send one request; return once the response's headers arrived. Raises an :class:`UpstreamError`
        (or, for a request this upstream cannot take, a :class:`ProxyError`); so does iterating ``chunks``."""
        ...

    async def ready(self) -> bool:
        """True when the upstream answers."""
        ...

    async def aclose(self) -> None: ...


def relay_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The response headers a client should see: content headers and the upstream's own, not hop-by-hop."""
    return [(k.lower(), v) for k, v in raw if k.lower().decode("latin-1") not in _DROP_RESPONSE]


def upstream_error(exc: BaseException, upstream: str, *, answering: bool = False) -> UpstreamError:
    """aiohttp's exception tree onto the proxy's, once, at this boundary.

    ``answering``: the response had begun, so a connection error means the answer broke off.
    ``tests/unit/test_upstream.py`` maps every exception class aiohttp defines.
    """
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout(f"upstream {upstream!r} did not accept the connection in time")
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        what = "stopped sending" if answering else "did not answer in time"
        return UpstreamTimeout(f"upstream {upstream!r} {what}")
    if answering:
        return UpstreamBrokeOff(f"upstream {upstream!r} broke off its response")
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return UpstreamUnreachable(f"upstream {upstream!r} could not be reached")
    return UpstreamUnreachable(f"upstream {upstream!r} failed: {type(exc).__name__}")


@asynccontextmanager
async def _mapped(upstream: str, *, answering: bool = False) -> AsyncIterator[None]:
    try:
        yield
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise upstream_error(exc, upstream, answering=answering) from exc


class OpenAIUpstream:
    """An OpenAI-compatible server reached over one pooled aiohttp session.

    aiohttp directly, not httpx: on this kind of 2-core machine httpx's request building and pool
    cost about as much as the rest of the relay (the issue #7 measurements). The session is made
    on first use, inside the running loop.

    >>> from proxy.settings import UpstreamConfig
    >>> OpenAIUpstream(UpstreamConfig(name="vllm", base_url="http://127.0.0.1:8000/v1")).name
    'vllm'
    """

    def __init__(self, config: UpstreamConfig, *, api_key: str | None = None) -> None:
        self.config = config
        t = config.timeouts
        self._base = config.base_url.rstrip("/")
        self._key = api_key
        # connect covers waiting for a pooled connection and opening one; sock_read bounds each chunk
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=t.pool + t.connect, sock_connect=t.connect, sock_read=t.read
        )
        self._session: aiohttp.ClientSession | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=1000, limit_per_host=0, keepalive_timeout=self.config.timeouts.keepalive
                ),
                timeout=self._timeout,
                # an upstream (or an ingress before it) may compress whatever was asked: answers are decoded
                # here and relayed decoded, so the client never gets compressed bytes without their
                # content-encoding, and the classifier reads text; a non-streamed answer's decoded size
                # counts against max_response_bytes (a decompression bomb is a 502, not a hang)
                auto_decompress=True,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def _credential(self, path: str) -> tuple[str, str]:
        """The upstream key as the header this upstream expects on ``path``."""
        how = self.config.key_header
        if how == "auto":
            anthropic = path == "/messages" or path.startswith("/messages/")
            how = "x-api-key" if anthropic else "authorization"
        return ("x-api-key", str(self._key)) if how == "x-api-key" else ("authorization", f"Bearer {self._key}")

    def _url(self, path: str, query: str = "") -> yarl.URL:
        return yarl.URL(self._base + path + ("?" + query if query else ""), encoded=True)

    async def send(
        self, method: str, path: str, body: bytes, headers: Iterable[tuple[str, str]], query: str = ""
    ) -> UpstreamResponse:
        out = [(k, v) for k, v in headers if k.lower() not in _DROP_REQUEST]
        out.append(("accept-encoding", "identity"))
        if self._key:
            out.append(self._credential(path))
        started = time.perf_counter()
        url, retried = self._url(path, query), False

        def attempt() -> Awaitable[aiohttp.ClientResponse]:
            return self._client().request(method, url, data=body or None, headers=out, allow_redirects=False)

        async with _mapped(self.name):
            try:
                response = await attempt()
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if isinstance(exc, aiohttp.ClientConnectorError):  # a new connection failed: nothing to retry
                    raise
                # The pooled connection was closed by the upstream as we reused it (its idle timeout,
                # or a server that closes after each answer without saying so); no response byte came.
                # aiohttp retries only idempotent methods; a POST gets one retry on a fresh connection.
                await asyncio.sleep(0)  # let the loop notice any other connection the upstream closed
                retried = True
                response = await attempt()
        return UpstreamResponse(
            status_code=response.status,
            headers=relay_headers(response.raw_headers),
            content_type=response.headers.get("content-type", ""),
            chunks=self._chunks(response),
            _close=lambda: _close(response),
            waited=time.perf_counter() - started,
            retried=retried,
        )

    async def _chunks(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        try:
            async with _mapped(self.name, answering=True):
                async for chunk in response.content.iter_any():
                    yield chunk
        finally:
            await _close(response)

    async def _get(self, path: str, timeout: float) -> aiohttp.ClientResponse:
        headers = dict([self._credential(path)]) if self._key else None
        return await self._client().get(
            self._url(path), headers=headers, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
        )

    async def ready(self) -> bool:
        try:
            async with await self._get("/models", 2.0) as response:
                return response.status < 500
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def list_models(self) -> list[dict[str, object]]:
        """The upstream's own model list (``GET /models``); empty when it has none or fails."""
        try:
            async with await self._get("/models", 5.0) as response:
                data = (await response.json(content_type=None)).get("data", []) if response.status == 200 else []
        except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
            return []
        return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _close(response: aiohttp.ClientResponse) -> None:
    """Hand a fully read connection back to the pool; drop one whose body was not read to the end."""
    if response.content.at_eof():
        response.release()
    else:
        response.close()


__all__ = [
    "OpenAIUpstream",
    "ProxyError",
    "Upstream",
    "UpstreamError",
    "UpstreamResponse",
    "relay_headers",
    "upstream_error",
]
