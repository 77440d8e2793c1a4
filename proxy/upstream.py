"""Upstream clients behind one narrow interface: send a request, get status, headers and a body stream.

``OpenAIUpstream`` speaks to any OpenAI-compatible server (vLLM, Ollama, llama.cpp, TGI, OpenAI)
over one pooled ``httpx.AsyncClient``. Providers that are not OpenAI-compatible go through
:mod:`proxy.litellm_upstream`, the one module that imports litellm. httpx's exceptions are
translated into the proxy's error tree here, once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from proxy.errors import ProxyError, UpstreamTimeout, UpstreamUnreachable
from proxy.settings import UpstreamConfig

# Request headers never forwarded: hop-by-hop, the client's credentials, and what httpx recomputes.
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


class UpstreamStreamError(Exception):
    """The upstream failed after its response had started (a stream cut mid-way, a read timeout)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class UpstreamResponse:
    """An upstream's answer once its headers arrived; the body is read or iterated once."""

    status_code: int
    headers: list[tuple[bytes, bytes]]
    content_type: str
    chunks: AsyncIterator[bytes]
    _close: object = field(default=None, repr=False)
    waited: float = 0.0  # seconds spent waiting on the upstream so far

    async def read(self, limit: int) -> bytes:
        """The whole body, up to ``limit`` bytes (more is an error, not a silent cut)."""
        parts, size = [], 0
        async for chunk in self.chunks:
            size += len(chunk)
            if size > limit:
                raise UpstreamStreamError("protocol", f"upstream response exceeds {limit} bytes")
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
        """Send one request; return once the response's headers arrived. Raises a :class:`ProxyError`."""
        ...

    async def ready(self) -> bool:
        """True when the upstream answers."""
        ...

    async def aclose(self) -> None: ...


def relay_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The response headers a client should see: content headers and the upstream's own, not hop-by-hop."""
    return [(k.lower(), v) for k, v in raw if k.lower().decode("latin-1") not in _DROP_RESPONSE]


@asynccontextmanager
async def _translated(upstream: str) -> AsyncIterator[None]:
    """Map httpx's exception tree onto the proxy's, once, at this boundary."""
    try:
        yield
    except httpx.TimeoutException as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
            # the aiohttp transport reports a refused connection as a connect timeout; it is not one
            raise UpstreamUnreachable(f"upstream {upstream!r} could not be reached") from exc
        if not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
            raise UpstreamTimeout(f"upstream {upstream!r} did not answer in time") from exc
        raise UpstreamTimeout(
            f"upstream {upstream!r} did not accept the connection in time", code="upstream_timeout"
        ) from exc
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise UpstreamUnreachable(f"upstream {upstream!r} could not be reached") from exc
    except httpx.HTTPError as exc:
        raise UpstreamUnreachable(f"upstream {upstream!r} failed: {type(exc).__name__}") from exc


def _default_transport() -> httpx.AsyncBaseTransport:
    """aiohttp's connection pool under httpx's API: about twice the throughput of httpx's own pool
    at 8 concurrent requests on this kind of machine (its pool re-checks every idle socket per request)."""
    from httpx_aiohttp import AiohttpTransport

    return AiohttpTransport()


class OpenAIUpstream:
    """An OpenAI-compatible server reached over a pooled httpx client.

    >>> from proxy.settings import UpstreamConfig
    >>> OpenAIUpstream(UpstreamConfig(name="vllm", base_url="http://127.0.0.1:8000/v1")).name
    'vllm'
    """

    def __init__(
        self, config: UpstreamConfig, *, transport: httpx.AsyncBaseTransport | None = None, api_key: str | None = None
    ) -> None:
        self.config = config
        t = config.timeouts
        self._auth = f"Bearer {api_key}" if api_key else None
        self._client = httpx.AsyncClient(
            base_url=config.base_url,
            timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30),
            transport=transport if transport is not None else _default_transport(),
            follow_redirects=False,
        )

    @property
    def name(self) -> str:
        return self.config.name

    async def send(
        self, method: str, path: str, body: bytes, headers: Iterable[tuple[str, str]], query: str = ""
    ) -> UpstreamResponse:
        out = [(k, v) for k, v in headers if k.lower() not in _DROP_REQUEST]
        out.append(("accept-encoding", "identity"))
        if self._auth:
            out.append(("authorization", self._auth))
        url = path + ("?" + query if query else "")
        request = self._client.build_request(method, url, content=body, headers=out)
        started = time.perf_counter()
        async with _translated(self.name):
            response = await self._client.send(request, stream=True)
        return UpstreamResponse(
            status_code=response.status_code,
            headers=relay_headers(response.headers.raw),
            content_type=response.headers.get("content-type", ""),
            chunks=self._chunks(response),
            _close=response.aclose,
            waited=time.perf_counter() - started,
        )

    async def _chunks(self, response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.TimeoutException as exc:
            raise UpstreamStreamError("timeout", f"upstream {self.name!r} stopped sending") from exc
        except httpx.HTTPError as exc:
            raise UpstreamStreamError("stream_interrupted", f"upstream {self.name!r} broke off its response") from exc
        finally:
            await response.aclose()

    async def ready(self) -> bool:
        try:
            response = await self._client.get(
                "/models", headers={"authorization": self._auth} if self._auth else None, timeout=2.0
            )
        except httpx.HTTPError:
            return False
        return response.status_code < 500

    async def list_models(self) -> list[dict[str, object]]:
        """The upstream's own model list (``GET /models``); empty when it has none or fails."""
        try:
            response = await self._client.get(
                "/models", headers={"authorization": self._auth} if self._auth else None, timeout=5.0
            )
            data = response.json().get("data", []) if response.status_code == 200 else []
        except (httpx.HTTPError, ValueError, AttributeError):
            return []
        return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

    async def aclose(self) -> None:
        await self._client.aclose()


__all__ = ["OpenAIUpstream", "ProxyError", "Upstream", "UpstreamResponse", "UpstreamStreamError", "relay_headers"]
