"""ConnectionExchange on its own (gateway.http.exchange): what it writes, and that a
finished exchange is freed at once, not left to the garbage collector."""

from __future__ import annotations

import asyncio
import gc

from uvicorn.protocols.http.flow_control import FlowControl

from gateway.http.exchange import ConnectionExchange


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _exchange(transport: Transport, keep_alive: bool, answered: list[int]) -> ConnectionExchange:
    exchange = ConnectionExchange(
        [(b"content-length", b"2")],
        {},
        "m",
        None,
        transport,  # type: ignore[arg-type]
        FlowControl(transport),  # type: ignore[arg-type]
        [(b"date", b"Thu, 03 Dec 2026 12:00:00 GMT")],
        lambda: answered.append(1),
        keep_alive,
    )
    exchange.body += b"{}"  # as the protocol's on_body does
    exchange.more_body = False  # and on_message_complete
    exchange.message_event.set()
    return exchange


def test_the_answer_is_one_write_with_the_date_and_the_handlers_headers() -> None:
    transport, answered = Transport(), list[int]()
    exchange = _exchange(transport, True, answered)
    assert exchange.arrived_body() == b"{}"
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    asyncio.run(exchange.respond(200, headers, b"[]"))
    assert transport.written == [
        b"HTTP/1.1 200 OK\r\ndate: Thu, 03 Dec 2026 12:00:00 GMT\r\n"
        b"content-type: application/json\r\ncontent-length: 2\r\n\r\n[]"
    ]
    assert exchange.response_complete and answered == [1] and not transport.closed


def test_without_keep_alive_the_answer_says_close_and_closes() -> None:
    transport, answered = Transport(), list[int]()
    asyncio.run(_exchange(transport, False, answered).respond(200, [], b""))
    assert b"connection: close\r\n" in transport.written[0] and transport.closed


def test_a_connection_close_header_from_the_handler_is_not_doubled() -> None:
    transport, answered = Transport(), list[int]()
    exchange = _exchange(transport, True, answered)
    asyncio.run(exchange.respond(408, [(b"connection", b"close")], b""))
    assert transport.written[0].count(b"connection: close") == 1 and transport.closed


def test_a_finished_exchange_leaves_no_garbage_cycle() -> None:
    """A cycle through the exchange (itself as its event, a method bound to it) would
    keep every request's exchange, headers and body until the collector ran."""
    gc.collect()
    gc.disable()
    try:
        for _ in range(100):
            transport, answered = Transport(), list[int]()
            exchange = _exchange(transport, True, answered)
            assert exchange.gone is not None and not exchange.gone()
            asyncio.run(exchange.respond(200, [], b""))
        del exchange, transport, answered
        assert gc.collect() == 0
    finally:
        gc.enable()
