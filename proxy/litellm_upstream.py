"""Providers that are not OpenAI-compatible (Anthropic, Bedrock, Gemini, ...) through litellm.

The only module that imports litellm, and it is imported only when a config names an upstream
with ``provider: litellm`` (importing litellm costs seconds and ~190 MB). Requests arrive in
OpenAI's wire format and leave in it: litellm translates to and from the provider.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson

from proxy.errors import BadRequest, UpstreamBrokeOff, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from proxy.settings import UpstreamConfig, prepare_litellm
from proxy.upstream import UpstreamResponse

prepare_litellm()  # before the import: litellm must never fetch its cost map
import litellm  # noqa: E402

litellm.telemetry = False
litellm.drop_params = True  # an OpenAI parameter the provider lacks is dropped, not an error

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_CALLS = {"/chat/completions": "acompletion", "/completions": "atext_completion", "/responses": "aresponses"}


def _dump(obj: Any) -> bytes:
    if hasattr(obj, "model_dump"):
        return orjson.dumps(obj.model_dump(mode="json", exclude_none=False), default=str)
    return orjson.dumps(obj, default=str)


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


class LiteLLMUpstream:
    """An upstream whose calls go through ``litellm.acompletion`` and friends."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self._api_key = config.api_key()

    @property
    def name(self) -> str:
        return self.config.name

    async def send(
        self, method: str, path: str, body: bytes, headers: Iterable[tuple[str, str]], query: str = ""
    ) -> UpstreamResponse:
        call = _CALLS.get(path)
        if method != "POST" or call is None:
            raise BadRequest(f"{method} /v1{path} is not supported for upstream {self.name!r} (litellm).")
        params: dict[str, Any] = orjson.loads(body)
        params["model"] = self.config.litellm_model.replace("{model}", params["model"])
        if self.config.base_url:
            params["api_base"] = self.config.base_url
        if self._api_key:
            params["api_key"] = self._api_key
        t = self.config.timeouts
        params.setdefault("timeout", t.read)
        started = time.perf_counter()
        try:
            result = await getattr(litellm, call)(**params)
        except litellm.exceptions.Timeout as exc:
            raise UpstreamTimeout(f"upstream {self.name!r} did not answer in time") from exc
        except litellm.exceptions.APIConnectionError as exc:
            raise UpstreamUnreachable(f"upstream {self.name!r} could not be reached") from exc
        except Exception as exc:
            status = getattr(exc, "status_code", None)
            if not isinstance(status, int) or status < 400:
                raise UpstreamUnreachable(f"upstream {self.name!r} failed: {type(exc).__name__}") from exc
            msg = str(getattr(exc, "message", None) or type(exc).__name__)
            return UpstreamResponse(
                status,
                list(_JSON),
                "application/json",
                _once(UpstreamError(msg, code=None).body()),
                waited=time.perf_counter() - started,
            )
        waited = time.perf_counter() - started
        if params.get("stream"):
            return UpstreamResponse(
                200, list(_SSE), "text/event-stream", self._events(result, path == "/responses"), waited=waited
            )
        return UpstreamResponse(200, list(_JSON), "application/json", _once(_dump(result)), waited=waited)

    async def _events(self, stream: Any, responses_api: bool) -> AsyncIterator[bytes]:
        try:
            async for item in stream:
                data = _dump(item)
                if responses_api:
                    kind = getattr(item, "type", None) or "message"
                    yield b"event: " + str(getattr(kind, "value", kind)).encode() + b"\ndata: " + data + b"\n\n"
                else:
                    yield b"data: " + data + b"\n\n"
            if not responses_api:
                yield b"data: [DONE]\n\n"
        except litellm.exceptions.Timeout as exc:
            raise UpstreamTimeout(f"upstream {self.name!r} stopped sending") from exc
        except Exception as exc:
            raise UpstreamBrokeOff(f"upstream {self.name!r} broke off its response") from exc

    async def ready(self) -> bool:
        return True  # a provider's health cannot be probed without a billed call

    async def aclose(self) -> None:
        return None
