"""One path policy, applied to every request before routing (as Envoy's ``normalize_path``,
``merge_slashes`` and ``path_with_escaped_slashes_action: REJECT_REQUEST`` do).

The path as the client sent it (``raw_path``) is percent-decoded once; a decoded ``/``, ``?``, ``#``,
``\\`` or NUL is refused (an encoded slash or query would reach the upstream as structure); dot
segments are resolved, repeated slashes merged and one trailing slash dropped. A path under
``/v1`` whose resolved form leaves ``/v1/`` is refused. What the proxy routes on and forwards is
exactly the normalised path, re-encoded (:func:`encode`). Refusals are 400s in the error envelope.

>>> normalise(b"/v1//chat/completions/")
'/v1/chat/completions'
>>> normalise(b"/v1/models/a/../b")
'/v1/models/b'
>>> normalise(b"/v1/%2e%2e/admin")
Traceback (most recent call last):
...
proxy.errors.BadRequest: The path leaves /v1/ once its dot segments are resolved.
"""

from __future__ import annotations

from urllib.parse import quote, unquote_to_bytes

from proxy.errors import BadRequest

_FORBIDDEN = {b"/": "/", b"?": "?", b"#": "#", b"\\": "\\", b"\x00": "NUL"}
_SAFE = "/:@!$&'()*+,;=-._~"  # RFC 3986 pchar and "/": left as they are when re-encoding


def normalise(raw: bytes) -> str:
    """The normalised, decoded path of a request target's raw path; raises :class:`BadRequest`."""
    if b"%" in raw:
        for enc in (b"%2f", b"%3f", b"%23", b"%5c", b"%00"):
            if enc in raw.lower():
                char = _FORBIDDEN[unquote_to_bytes(enc)]
                raise BadRequest(f"The path may not contain an encoded {char!r}.", code="invalid_path")
    decoded = unquote_to_bytes(raw)
    if b"\x00" in decoded or b"\\" in decoded:
        raise BadRequest("The path may not contain a NUL or a backslash.", code="invalid_path")
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The path is not valid UTF-8 once decoded.", code="invalid_path") from None
    if not text.startswith("/"):
        raise BadRequest("The path must start with '/'.", code="invalid_path")
    segments: list[str] = []
    for part in text.split("/")[1:]:
        if part in ("", "."):
            continue
        if part == "..":
            if segments:
                segments.pop()
            continue
        segments.append(part)
    path = "/" + "/".join(segments)
    first = [s for s in text.split("/") if s][:1]
    if first == ["v1"] and not (path == "/v1" or path.startswith("/v1/")):
        raise BadRequest("The path leaves /v1/ once its dot segments are resolved.", code="invalid_path")
    return path


def encode(path: str) -> str:
    """A normalised path, percent-encoded for the upstream's request line.

    >>> encode("/v1/models/meta-llama/Llama 3")
    '/v1/models/meta-llama/Llama%203'
    """
    return quote(path, safe=_SAFE)


# The /v1/* endpoints relayed unclassified (globs below /v1/): what OpenAI-compatible clients need.
# Upstream-admin paths (vLLM's load_lora_adapter / unload_lora_adapter, sleep, wake_up,
# reset_prefix_cache, collective_rpc, profiling; llama.cpp's slots and lora-adapters) are not in it,
# so they are refused unless a config adds them.
# fmt: off
DEFAULT_PASSTHROUGH: tuple[str, ...] = (
    "embeddings", "moderations", "audio/*", "images/*", "files", "files/*", "uploads", "uploads/*",
    "batches", "batches/*", "rerank", "score", "tokenize", "detokenize", "responses/*", "chat/completions/*",
    "messages", "messages/*", "vector_stores", "vector_stores/*",
)
# fmt: on
