"""One inference request and its answer: what the request path needs of the transport.

The inference handler (``gateway.http.inference``) reads the request's headers, its
body (``receive``, ASGI's), whether the caller has gone, and sends one answer
(``respond``). Two kinds of exchange give it that:

- ``ConnectionExchange``: what ``LimitedHttpProtocol`` starts for a POST to one of the
  four inference paths, straight from the parser. uvicorn's ASGI path builds, per
  request, a scope and a copy of the app state, a RequestResponseCycle with an
  asyncio.Event, and two ``send`` messages, checking every header with two regular
  expressions and writing each message to the socket on its own. On a small model that
  was the largest share of a request's CPU time. Here the answer (status line, headers,
  body) goes out in one write, and the body is read without an Event.
- ``AsgiExchange``: any other way a request reaches the handler through ASGI (a path
  with a query string or escapes, ``Expect: 100-continue``, another ASGI server).

For the protocol, a ConnectionExchange stands where uvicorn's cycle stands
(``protocol.cycle``), with the same flags (``body``, ``more_body``, ``disconnected``,
``keep_alive``, ``response_complete``), a ``message_event`` that the protocol sets when
body bytes arrive or the connection drops, and ``run_asgi``, which uvicorn's
``_start_asgi_task`` runs as a task (or queues behind a pipelined request). So uvicorn's
drain on shutdown, its keep-alive timer and its pipelining treat it as any request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.types import Message, Receive, Scope, Send
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from gateway.http.disconnect import disconnect_probe

log = logging.getLogger("gateway.http")

RawHeaders = list[tuple[bytes, bytes]]


class Exchange(Protocol):
    """What the inference handler reads and answers through."""

    headers: RawHeaders  # the request's, names lower-case
    state: dict[str, Any]  # the app's lifespan state

    @property
    def gone(self) -> Callable[[], bool] | None:
        """Whether the caller has hung up, where that can be known."""

    @property
    def receive(self) -> Receive:
        """ASGI's receive: the body, chunk by chunk."""

    def arrived_body(self) -> bytes | None:
        """The whole body, if it is here already; None: read it with ``receive``."""

    async def respond(self, status: int, headers: RawHeaders, body: bytes) -> None:
        """The whole answer; ``headers`` include content-type and content-length."""


class AsgiExchange:
    """An exchange over ASGI's scope, receive and send."""

    __slots__ = ("headers", "state", "receive", "gone", "_send")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.headers = scope["headers"]
        self.state = scope["state"]
        self.receive = receive
        self.gone = disconnect_probe(receive)
        self._send = send

    def arrived_body(self) -> bytes | None:
        return None

    async def respond(self, status: int, headers: RawHeaders, body: bytes) -> None:
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})


class Handler(Protocol):
    def handle(self, exchange: Exchange, model: str, version: str | None) -> Awaitable[None]: ...


class ConnectionExchange:
    """A request read by the connection's parser, answered on its transport."""

    __slots__ = (
        "headers",
        "state",
        "model",
        "version",
        "transport",
        "flow",
        "default_headers",
        "on_response",
        "keep_alive",
        "body",
        "more_body",
        "disconnected",
        "response_complete",
        "_signalled",
        "_waiter",
    )

    def __init__(
        self,
        headers: RawHeaders,
        state: dict[str, Any],
        model: str,
        version: str | None,
        transport: asyncio.Transport,
        flow: FlowControl,
        default_headers: RawHeaders,
        on_response: Callable[[], None],
        keep_alive: bool,
    ) -> None:
        self.headers = headers
        self.state = state
        self.model = model
        self.version = version
        self.transport = transport
        self.flow = flow
        self.default_headers = default_headers  # uvicorn's (the date header)
        self.on_response = on_response  # the protocol's: next request, or keep-alive timer
        self.keep_alive = keep_alive
        self.body = bytearray()  # the protocol appends what the parser delivers
        self.more_body = True  # until the parser has seen the whole message
        self.disconnected = False
        self.response_complete = False
        self._signalled = False
        self._waiter: asyncio.Future[None] | None = None

    # properties, not attributes holding the exchange itself or a method bound to it: such
    # a cycle would leave every request's exchange to the garbage collector
    @property
    def message_event(self) -> ConnectionExchange:
        """The protocol calls ``cycle.message_event.set()``: the exchange is its own event."""
        return self

    @property
    def gone(self) -> Callable[[], bool]:
        return self._is_gone

    def _is_gone(self) -> bool:
        return self.disconnected

    def set(self) -> None:
        """Body bytes arrived, the message is complete, or the connection dropped."""
        self._signalled = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def arrived_body(self) -> bytes | None:
        """The body, when the parser has read the whole request (as with most requests,
        whose headers and body come in one segment)."""
        if self.more_body or self.disconnected:
            return None
        body, self.body = self.body, bytearray()
        self._signalled = False
        return bytes(body)

    async def receive(self) -> Message:
        """ASGI's receive: the body received so far, once there is any news."""
        if not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            if not self._signalled:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            self._signalled = False
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        body, self.body = self.body, bytearray()
        return {"type": "http.request", "body": bytes(body), "more_body": self.more_body}

    async def respond(self, status: int, headers: RawHeaders, body: bytes) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()  # a caller that does not read its answers is not fed more
        if self.disconnected or self.response_complete:
            return
        parts = [STATUS_LINE[status]]
        for name, value in self.default_headers:
            parts += (name, b": ", value, b"\r\n")
        says_close = False  # the handler's own connection: close (a 408)
        for name, value in headers:
            if name == b"connection" and value == b"close":
                says_close = True
            parts += (name, b": ", value, b"\r\n")
        if says_close:
            self.keep_alive = False
        elif not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        self.transport.write(b"".join(parts))
        self.response_complete = True
        self.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()

    async def run_asgi(self, handler: Handler) -> None:
        """Run the request (uvicorn's ``_start_asgi_task`` calls this by its cycle's name)."""
        try:
            await handler.handle(self, self.model, self.version)
        except BaseException:
            log.exception("the inference handler failed")
            if not self.response_complete:
                self.transport.close()  # nothing sensible can follow on this connection
        finally:
            self.on_response = _nothing


def _nothing() -> None:
    pass
