"""Reading a request body within --max-body-bytes, compressed or not."""

from __future__ import annotations

import zlib

from starlette.types import Receive

from gateway.errors import InvalidRequest, PayloadTooLarge

# zlib window bits: gzip framing, and zlib framing for "deflate"
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def read_body(
    receive: Receive, limit: int, declared: bytes | None, encoding: bytes | None
) -> bytes:
    """The body from ASGI ``receive``; ``declared`` and ``encoding`` are the raw
    Content-Length and Content-Encoding header values, if any."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, f"Content-Length is {declared.decode()}")
    message = await receive()
    body: bytes = message.get("body", b"")
    if message.get("more_body", False):
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit, "the body is larger")
            chunks.append(chunk)
        body = b"".join(chunks)
    elif len(body) > limit:
        raise _too_large(limit, "the body is larger")
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
