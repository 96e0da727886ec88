"""Repository control (Triton's repository extension), behind the admin bearer token.

Admin bodies are small JSON documents: at most ``ADMIN_MAX_BODY`` bytes (413 past
that, judged by Content-Length before anything is read, and by counting while a
chunked body streams in), within ``--read-timeout`` (408), and JSON that does not
parse is a 400.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError, InvalidRequest, PayloadTooLarge, RequestTimeout
from gateway.http.responses import error_response, json_response
from gateway.service import ModelCatalog

Handler = Callable[[Request], Awaitable[Response]]

ADMIN_MAX_BODY = 1024 * 1024

DISABLED = (
    "admin endpoints are disabled: start the gateway with --admin-token TOKEN "
    "(or GATEWAY_ADMIN_TOKEN=TOKEN) and send 'Authorization: Bearer TOKEN'"
)
UNAUTHORIZED = (
    "missing or wrong admin token: send 'Authorization: Bearer <the --admin-token value>'"
)


def bearer_matches(authorization: str, token: str) -> bool:
    """Whether an ``Authorization`` value (HTTP header or gRPC metadata) is
    ``Bearer <token>``."""
    scheme, _, given = authorization.partition(" ")
    # compare_digest takes as long for a near miss as for a wild guess
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def guarded(handler: Handler) -> Handler:
    """Answer 403 when no token is configured and 401 unless the request carries it."""

    async def check(request: Request) -> Response:
        token: str | None = request.state.admin_token
        if token is None:
            return json_response({"error": DISABLED}, 403)
        if not bearer_matches(request.headers.get("authorization", ""), token):
            return json_response({"error": UNAUTHORIZED}, 401, {"www-authenticate": "Bearer"})
        try:
            _check_declared_size(request)
            return await handler(request)
        except GatewayError as exc:  # a 408 closes the connection: see error_parts
            return error_response(exc)

    return check


def _too_large(got: str) -> PayloadTooLarge:
    return PayloadTooLarge(f"admin request bodies are limited to {ADMIN_MAX_BODY} bytes, but {got}")


def _check_declared_size(request: Request) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not (declared.isascii() and declared.isdigit()):
        raise InvalidRequest(f"Content-Length must be a number of bytes, got '{declared[:40]}'")
    if len(declared) > 18 or int(declared) > ADMIN_MAX_BODY:
        raise _too_large(f"Content-Length is {declared[:40]}")


async def read_admin_body(request: Request) -> bytes:
    """The body, read only as far as ``ADMIN_MAX_BODY`` allows, within --read-timeout."""
    chunks: list[bytes] = []
    size = 0
    timeout_s: float = request.state.read_timeout
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > ADMIN_MAX_BODY:
                    raise _too_large("the body is larger")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            f"expected the request body within {timeout_s:g} s (--read-timeout); "
            f"received {size} bytes"
        ) from None
    return b"".join(chunks)


NO_BODY: Any = object()  # what read_admin_json gives for an empty body


async def read_admin_json(request: Request) -> Any:
    """The body as JSON; ``NO_BODY`` when it is empty."""
    body = await read_admin_body(request)
    if not body.strip():
        return NO_BODY
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None


def _catalog(request: Request) -> ModelCatalog:
    catalog: ModelCatalog = request.state.catalog
    return catalog


@guarded
async def repository_index(request: Request) -> Response:
    options = await read_admin_json(request)
    ready_only = False
    if options is not NO_BODY:
        if not isinstance(options, dict) or not isinstance(options.get("ready", False), bool):
            raise InvalidRequest(
                f'body must be empty or {{"ready": true|false}}, got {_brief(options)}'
            )
        ready_only = options.get("ready", False)
    return json_response(_catalog(request).index(ready_only))


@guarded
async def load_model(request: Request) -> Response:
    _options(await read_admin_json(request))
    return json_response(await _catalog(request).load(request.path_params["model"]))


@guarded
async def unload_model(request: Request) -> Response:
    _options(await read_admin_json(request))
    return json_response(await _catalog(request).unload(request.path_params["model"]))


@guarded
async def get_routing(request: Request) -> Response:
    return json_response(_catalog(request).routing(request.path_params["model"]))


async def _model_document(request: Request, needs: str) -> tuple[ModelCatalog, str, Any]:
    """The catalog, the model named in the path (404 before the body is read) and the
    body's JSON, which must not be empty (``needs`` says what it should be)."""
    name = request.path_params["model"]
    catalog = _catalog(request)
    catalog.require(name)
    document = await read_admin_json(request)
    if document is NO_BODY:
        raise InvalidRequest(f"{needs}, got an empty body")
    return catalog, name, document


@guarded
async def put_routing(request: Request) -> Response:
    catalog, name, document = await _model_document(
        request, 'PUT routing needs a JSON body like {"weights": {"1": 90, "2": 10}}'
    )
    return json_response(await catalog.set_routing(name, document))


@guarded
async def delete_routing(request: Request) -> Response:
    _options(await read_admin_json(request))
    return json_response(await _catalog(request).reset_routing(request.path_params["model"]))


@guarded
async def drift(request: Request) -> Response:
    return json_response(_catalog(request).drift(request.path_params["model"]))


@guarded
async def start_rollout(request: Request) -> Response:
    catalog, name, document = await _model_document(
        request, 'a rollout needs a JSON body like {"version": 2}'
    )
    return json_response(await catalog.start_rollout(name, document), 201)


@guarded
async def rollout(request: Request) -> Response:
    return json_response(await _catalog(request).rollout(request.path_params["model"]))


@guarded
async def abort_rollout(request: Request) -> Response:
    _options(await read_admin_json(request))
    return json_response(await _catalog(request).abort_rollout(request.path_params["model"]))


@guarded
async def control_state(request: Request) -> Response:
    return json_response(await _catalog(request).state())


def _options(document: Any) -> None:
    """Triton's load and unload take an optional {"parameters": {...}}; nothing in it
    changes what they do here, but it must be a JSON object."""
    if document is not NO_BODY and not isinstance(document, dict):
        raise InvalidRequest(
            f'body must be empty or a JSON object like {{"parameters": {{}}}}, '
            f"got {_brief(document)}"
        )


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
