"""Reading a request body within --max-body-bytes and --read-timeout, compressed or not."""

from __future__ import annotations

import asyncio
import zlib

from starlette.types import Receive

from gateway.errors import ClientGone, InvalidRequest, PayloadTooLarge, RequestTimeout

# zlib window bits: gzip framing, and zlib framing for "deflate"
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def read_body(
    receive: Receive,
    limit: int,
    declared: bytes | None,
    encoding: bytes | None,
    timeout_s: float | None = None,
) -> bytes:
    """The body from ASGI ``receive``; ``declared`` and ``encoding`` are the raw
    Content-Length and Content-Encoding header values, if any. A body still arriving
    after ``timeout_s`` is RequestTimeout (408); a caller that hangs up, ClientGone."""
    _check_declared(declared, limit)
    if timeout_s is None or _arrived(receive):
        body = await _receive(receive, limit, [0])  # no timer: nothing left to wait for
    else:
        received = [0]
        try:
            async with asyncio.timeout(timeout_s):
                body = await _receive(receive, limit, received)
        except TimeoutError:
            of = "" if declared is None else f" of {declared.decode('latin-1')}"
            raise RequestTimeout(
                f"expected the request body within {timeout_s:g} s (--read-timeout); "
                f"received {received[0]}{of} bytes"
            ) from None
    return _decoded(body, encoding, limit)


def arrived_body(body: bytes, limit: int, declared: bytes | None, encoding: bytes | None) -> bytes:
    """A body that had arrived whole before the request started (nothing to wait for),
    held to the same limit and decoded as ``read_body`` does."""
    _check_declared(declared, limit)
    if len(body) > limit:
        raise _too_large(limit, "the body is larger")
    return _decoded(body, encoding, limit)


def _check_declared(declared: bytes | None, limit: int) -> None:
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, f"Content-Length is {declared.decode()}")


def _decoded(body: bytes, encoding: bytes | None, limit: int) -> bytes:
    if encoding is None:
        return body
    name = encoding.decode("latin-1").strip().lower()
    if name == "identity":
        return body
    if name not in _DECODERS:
        raise InvalidRequest(
            f"Content-Encoding '{name}' is not supported; send gzip, deflate or identity"
        )
    return _decompress(body, name, limit)


def _arrived(receive: Receive) -> bool:
    """Whether uvicorn has the whole body already (its request cycle's ``more_body``),
    so reading it cannot wait; False where that cannot be known."""
    return getattr(getattr(receive, "__self__", None), "more_body", True) is False


async def _receive(receive: Receive, limit: int, received: list[int]) -> bytes:
    """The body's chunks joined; ``received[0]`` counts the bytes as they come."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if message.get("more_body", False):
        chunks = [body]
        size = received[0] = len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size = received[0] = size + len(chunk)
            if size > limit:
                raise _too_large(limit, "the body is larger")
            chunks.append(chunk)
        body = b"".join(chunks)
    elif len(body) > limit:
        raise _too_large(limit, "the body is larger")
    elif not body and message["type"] == "http.disconnect":
        raise ClientGone()
    return body


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    decoder = zlib.decompressobj(_DECODERS[encoding])
    try:
        # max_length bounds the output, so a small bomb cannot expand past the limit
        data = decoder.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidRequest(f"the body is not valid {encoding} data: {exc}") from None
    if len(data) > limit or decoder.unconsumed_tail:
        raise _too_large(limit, "the body decompresses to more")
    return data


def _too_large(limit: int, got: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body is limited to {limit} bytes (--max-body-bytes), but {got}"
    )
