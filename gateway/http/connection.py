"""The HTTP/1.1 connection: uvicorn's httptools protocol, with the limits it lacks.

uvicorn's httptools protocol buffers request headers without bound and waits for
them forever. ``LimitedHttpProtocol`` adds, per connection:

- headers (request line included) over ``max_header_bytes``: 431;
- headers not complete ``read_timeout`` after their first byte: 408; a connection
  that sends nothing at all for ``read_timeout`` after it opened: closed, unanswered.

Both answers are JSON ``{"error": ...}`` with ``connection: close``. An idle keep-alive
connection closes ``timeout_keep_alive`` after its last answer, as in uvicorn; a body
that does not arrive in time is the inference path's (``gateway.http.body``).

The hot path pays a few attribute writes and two ``loop.time()`` per request: one
timer per connection covers all three timeouts, re-armed only when it fires (at least
every ``timeout_keep_alive``). uvicorn arms and cancels a keep-alive timer per request.
Bytes are counted per chunk the transport delivers, so a single huge header is
refused before it is ever whole; the chunk in which a request starts counts in full
(at most one socket read more than the request's own headers).

POSTs to the inference paths skip ASGI (``_start_inference``, gateway.http.exchange),
so the ASGI scope is built only for the requests that take uvicorn's ASGI path.
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
        self._idle_since = 0.0  # loop time of the last answer
        self._read_timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # when the timer fires

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._since = self.loop.time()
        self._arm(self.read_timeout)

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
        # uvicorn's, less the ASGI scope (``_asgi_scope``: only for the ASGI path)
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
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
            self.scope = self._asgi_scope()
            HttpToolsProtocol.on_headers_complete(self)

    def _asgi_scope(self) -> Any:
        """The scope uvicorn's ``on_message_begin`` builds for every request."""
        return {
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }

    def on_response_complete(self) -> None:
        # uvicorn's, except that the keep-alive timeout is the connection timer's
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # start the next pipelined request
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = now = self.loop.time()
        if self._timer_at > now + self.timeout_keep_alive:  # armed for a longer timeout
            self._arm(self.timeout_keep_alive)

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

    def _arm(self, delay: float) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
        self._timer_at = self.loop.time() + delay
        self._read_timer = self.loop.call_later(delay, self._check_reading)

    def _check_reading(self) -> None:
        """The per-connection timer: refuse headers (or silence) that took too long, and
        close a keep-alive connection idle for ``timeout_keep_alive``."""
        self._read_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        now = self.loop.time()
        # while a request runs: look again within the keep-alive timeout, so that an idle
        # spell after its answer is noticed in time
        delay = min(self.read_timeout, self.timeout_keep_alive)
        if self._in_headers or cycle is None:  # reading headers, or nothing sent yet
            delay = self._since + self.read_timeout - now
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
        elif cycle.response_complete and not self.pipeline:  # idle between requests
            delay = self._idle_since + self.timeout_keep_alive - now
            if delay <= _SLACK_S:
                self.transport.close()
                return
        self._arm(delay)

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
