"""orjson-encoded responses and the single mapping from GatewayError to the wire."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError, QueueFull

JSON = "application/json"
log = logging.getLogger("gateway.http")


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(content), status_code, headers, media_type=JSON)


def error_response(exc: GatewayError, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if isinstance(exc, QueueFull):
        headers["retry-after"] = str(exc.retry_after_s)
    return json_response({"error": exc.message}, int(exc.status), headers)


def internal_error(request_id: str | None, headers: dict[str, str] | None = None) -> Response:
    suffix = f" (request id {request_id})" if request_id else ""
    message = f"internal error{suffix}; the gateway log has details"
    return json_response({"error": message}, 500, headers)


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
