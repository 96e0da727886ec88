"""The HTTP/1.1 connection: uvicorn's httptools protocol, with the limits it lacks.

uvicorn's httptools protocol buffers request headers without bound and waits for
them forever. ``LimitedHttpProtocol`` adds, per connection:

- headers (request line included) over ``max_header_bytes``: 431;
- headers not complete ``read_timeout`` after their first byte: 408; a connection
  that sends nothing at all for ``read_timeout`` after it opened: closed, unanswered.

Both answers are JSON ``{"error": ...}`` with ``connection: close``. Idle keep-alive
connections stay uvicorn's (``timeout_keep_alive``); a body that does not arrive in
time is the inference path's (``gateway.http.body``).

The hot path pays a few attribute writes and one ``loop.time()`` per request; the
timer is one per connection, re-armed only when it fires (once per ``read_timeout``).
Bytes are counted per chunk the transport delivers, so a single huge header is
refused before it is ever whole; the chunk in which a request starts counts in full
(at most one socket read more than the request's own headers).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.errors import GatewayError, HeadersTooLarge, RequestTimeout
from gateway.http.exchange import ConnectionExchange
from gateway.http.inference import match_inference_path

log = logging.getLogger("gateway.http")

DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_READ_TIMEOUT_S = 30.0
_SLACK_S = 0.005  # the loop's timers and clock count whole milliseconds


class _Refused(Exception):
    """Raised from a parser callback once the request has been answered."""


class LimitedHttpProtocol(HttpToolsProtocol):
    """Build it with ``functools.partial(LimitedHttpProtocol, max_header_bytes=...,
    read_timeout=...)`` as uvicorn.Config's ``http`` (a partial pickles for workers)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        read_timeout: float = DEFAULT_READ_TIMEOUT_S,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_header_bytes = max_header_bytes
        self.read_timeout = read_timeout
        self._in_headers = False  # a request has begun and its headers are not complete
        self._header_bytes = 0
        self._chunk_bytes = 0  # the size of the chunk being parsed
        self._since = 0.0  # loop time the connection opened, or the current request began
        self._read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._since = self.loop.time()
        self._read_timer = self.loop.call_later(self.read_timeout, self._check_reading)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's, plus the header count; an error a refusal raised to stop the parser
        # (the transport is closing then) is no "invalid request"
        self._unset_keepalive_if_required()
        self._chunk_bytes = size = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if not self.transport.is_closing():
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        if self._in_headers:  # still unfinished: all of this chunk was headers
            self._header_bytes += size
            if self._header_bytes > self.max_header_bytes:
                self._refuse(self._too_large(f"more than {self._header_bytes - 1} bytes"))

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)  # (cheaper than super() per request)
        self._in_headers = True
        self._header_bytes = 0  # bytes of earlier chunks since the request began
        self._since = self.loop.time()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        # the headers fit in the bytes since the request began: count exactly only when
        # those could be too many
        if self._header_bytes + self._chunk_bytes > self.max_header_bytes:
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if size > self.max_header_bytes:
                self._refuse(self._too_large(f"{size} bytes"))
                raise _Refused  # stops the parser: the request never starts
        if not self._start_inference():
            HttpToolsProtocol.on_headers_complete(self)

    def _start_inference(self) -> bool:
        """Start a POST to an inference path as a ConnectionExchange (gateway.http.exchange),
        not as an ASGI request; False for anything else, and for what only uvicorn's ASGI
        path covers: a query string, escapes, Expect: 100-continue, an upgrade, or
        settings this gateway does not use (root_path, limit_concurrency)."""
        parser = self.parser
        url = self.url
        if (
            parser.get_method() != b"POST"
            or b"?" in url
            or b"%" in url
            or self.expect_100_continue
            or self.root_path
            or self.limit_concurrency is not None
            or parser.should_upgrade()
        ):
            return False
        try:
            match = match_inference_path(url.decode("ascii"))
        except UnicodeDecodeError:
            return False
        if match is None:
            return False
        endpoint, model, version = match
        exchange = ConnectionExchange(
            self.headers,
            self.app_state,
            model,
            version,
            self.transport,
            self.flow,
            self.server_state.default_headers,
            self.on_response_complete,
            parser.get_http_version() != "1.0" and parser.should_keep_alive(),
        )
        existing = self.cycle
        self.cycle = exchange  # type: ignore[assignment]
        if existing is None or existing.response_complete:
            self._start_asgi_task(exchange, endpoint)  # type: ignore[arg-type]
        else:  # pipelined behind a request still being answered
            self.flow.pause_reading()
            self.pipeline.appendleft((exchange, endpoint))  # type: ignore[arg-type]
        return True

    def _too_large(self, got: str) -> HeadersTooLarge:
        return HeadersTooLarge(
            f"request headers are limited to {self.max_header_bytes} bytes in total "
            f"(--max-header-bytes); got {got}"
        )

    def _check_reading(self) -> None:
        """The per-connection timer: refuse headers (or silence) that took too long."""
        self._read_timer = None
        if self.transport.is_closing():
            return
        delay = self.read_timeout
        if self._in_headers or self.cycle is None:  # reading headers, or nothing sent yet
            delay = self._since + self.read_timeout - self.loop.time()
            if delay <= _SLACK_S:
                if self._in_headers:
                    self._refuse(
                        RequestTimeout(
                            f"expected the request headers within {self.read_timeout:g} s "
                            f"(--read-timeout); got {self._header_bytes} bytes and no end"
                        )
                    )
                else:  # no request line: nobody to answer
                    self.transport.close()
                return
        self._read_timer = self.loop.call_later(delay, self._check_reading)

    def _refuse(self, error: GatewayError) -> None:
        """Answer ``error`` in place of the request being read, and close."""
        self._in_headers = False
        if self.transport.is_closing():
            return
        status = int(error.status)
        body = orjson.dumps({"error": error.message})
        self.transport.write(
            b"".join(
                (
                    STATUS_LINE[status],
                    b"content-type: application/json\r\n",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                )
            )
        )
        self.transport.close()
        log.debug("refused a request from %s with %d: %s", self.client, status, error.message)
