"""The proxy's edge: what uvicorn's HTTP protocol does not bound, bounded here, before any app code.

uvicorn (with httptools) accepts a header block of any size and waits for it forever. This
protocol, a subclass of uvicorn's own, adds what nginx (``large_client_header_buffers``,
``client_header_timeout``) and Apache (``mod_reqtimeout``) do: request line and headers at most
``max_header_bytes`` and ``max_headers`` fields (431), all of it within ``header_timeout`` of the
connection opening or the request's first byte (408), and the HTTP server's own framing errors
answered in the error envelope (400) instead of plain text. Each of these responses closes the
connection. The body's pace (``body_timeout``, ``body_min_rate``) is bounded where it is read
(:func:`proxy.wire.read_body`), so the app answers it and counts it like any other error; the
keep-alive idle timeout is uvicorn's own (``timeout_keep_alive``), set from the same settings.

What is not answered in the envelope: a connection that sends bytes that are not HTTP at all and
then closes gets whatever reached it before it closed; TLS is terminated in front of the proxy.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.errors import BadRequest, HeadersTooLarge, ProxyError, RequestTimeout, api_of
from proxy.logs import logger
from proxy.settings import EdgeSettings


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header limits, a header timeout and errors in the envelope."""

    limits = EdgeSettings()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._raw_bytes = 0  # bytes received while reading headers (an upper bound)
        self._field_bytes = 0  # request target and header fields, as parsed (exact)
        self._header_count = 0
        self._reading_headers = True  # between a request's first byte (or the connection) and its headers' end
        self._refusal: ProxyError | None = None
        self._header_timer: asyncio.TimerHandle | None = None

    # the connection and the parser's callbacks
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_headers:
            self._arm()
            self._raw_bytes += len(data)  # an upper bound: this chunk may also hold the start of the body
        # uvicorn's own data_received, but for its warning on every unparsable request (a cheap way to
        # flood the log): a refusal here is one info line, like every other refused request
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            self.send_400_response(str(exc))
            return
        if self._reading_headers and self._raw_bytes > self.limits.max_header_bytes and not self._closing():
            # still no end of headers after more than the limit: no need to read on (an 8 MB header value)
            self._refuse(HeadersTooLarge(f"The request's headers exceed {self.limits.max_header_bytes} bytes."))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_headers = True
        self._raw_bytes = self._field_bytes = self._header_count = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._fail(HeadersTooLarge(f"The request has more than {self.limits.max_headers} header fields."))
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._disarm()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request httptools could not parse, or that a callback refused."""
        refusal, self._refusal = self._refusal, None
        self._write_error(refusal or BadRequest(f"Malformed HTTP request: {msg}", code="invalid_http"))

    # the limits
    def _count(self, n: int) -> None:
        self._field_bytes += n
        if self._field_bytes > self.limits.max_header_bytes:
            self._fail(HeadersTooLarge(f"The request's headers exceed {self.limits.max_header_bytes} bytes."))

    def _fail(self, exc: ProxyError) -> None:
        """From a parser callback: stop parsing; httptools raises, and uvicorn calls send_400_response."""
        self._refusal = exc
        raise httptools.HttpParserCallbackError(exc.message)

    def _refuse(self, exc: ProxyError) -> None:
        self._refusal = None
        self._write_error(exc)

    def _write_error(self, exc: ProxyError) -> None:
        self._disarm()
        if self._closing():
            return
        path = self.url.split(b"?", 1)[0].decode("latin-1") if getattr(self, "url", None) else ""
        logger.info("edge_refused", status=exc.status_code, code=exc.code, error=exc.message, path=path[:200])
        body = exc.body(api_of(path))
        head = [
            f"HTTP/1.1 {exc.status_code} {_REASONS.get(exc.status_code, 'Error')}\r\n".encode(),
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()

    def _timed_out(self) -> None:
        self._header_timer = None
        if self._reading_headers and not self._closing():
            self._write_error(RequestTimeout(f"The request's headers took longer than {self.limits.header_timeout} s."))

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.limits.header_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()


_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}


def protocol_for(limits: EdgeSettings) -> type[EdgeProtocol]:
    """An :class:`EdgeProtocol` class bound to ``limits`` (uvicorn takes a class, ``http=``)."""
    return type("EdgeProtocol", (EdgeProtocol,), {"limits": limits})


def uvicorn_options(limits: EdgeSettings) -> dict[str, Any]:
    """What every server of the proxy's passes to uvicorn for its edge."""
    return {"http": protocol_for(limits), "timeout_keep_alive": limits.keepalive_timeout}
