"""Reading a request body within --max-body-bytes, compressed or not."""

from __future__ import annotations

import zlib

from starlette.requests import Request

from gateway.errors import InvalidRequest, PayloadTooLarge

# zlib window bits: gzip framing, and zlib framing for "deflate"
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, f"Content-Length is {declared}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, "the body is larger")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in _DECODERS:
        raise InvalidRequest(
            f"Content-Encoding '{encoding}' is not supported; send gzip, deflate or identity"
        )
    return _decompress(body, encoding, limit)


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
