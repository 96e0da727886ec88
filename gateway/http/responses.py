"""orjson-encoded responses and the single mapping from GatewayError to the wire.

``error_parts`` is that mapping: the Starlette handlers (``error_response``) and the
raw-ASGI inference path (``gateway.http.inference``) both answer an error with it.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError, QueueFull, RequestTimeout

JSON = "application/json"
log = logging.getLogger("gateway.http")

# headers as the ASGI ``http.response.start`` message carries them
RawHeaders = list[tuple[bytes, bytes]]
ErrorParts = tuple[int, bytes, RawHeaders]


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(content), status_code, headers, media_type=JSON)


def error_parts(exc: GatewayError) -> ErrorParts:
    """How ``exc`` goes on the wire: its status, its JSON body ``{"error": message}``
    and the headers it adds: Retry-After on a 429 (QueueFull), Connection: close on a
    408 (RequestTimeout: the rest of its body must not be read as the next request)."""
    body = orjson.dumps({"error": exc.message})
    if isinstance(exc, QueueFull):
        return int(exc.status), body, [(b"retry-after", str(exc.retry_after_s).encode())]
    if isinstance(exc, RequestTimeout):
        return int(exc.status), body, [(b"connection", b"close")]
    return int(exc.status), body, []


def internal_error_body(request_id: str | None) -> bytes:
    """The body of a 500 for an error nobody raised on purpose (the log has the rest)."""
    suffix = f" (request id {request_id})" if request_id else ""
    return orjson.dumps({"error": f"internal error{suffix}; the gateway log has details"})


def error_response(exc: GatewayError) -> Response:
    status, body, extra = error_parts(exc)
    response = Response(body, status, media_type=JSON)
    response.raw_headers += extra
    return response


def internal_error(request_id: str | None) -> Response:
    return Response(internal_error_body(request_id), 500, media_type=JSON)


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no endpoint at {request.url.path}; see the README for the API"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return json_response({"error": message}, exc.status_code, dict(exc.headers or {}))


async def unhandled_exception(request: Request, exc: Exception) -> Response:
    request_id = request.headers.get("x-request-id")
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return internal_error(request_id)


async def gateway_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)
