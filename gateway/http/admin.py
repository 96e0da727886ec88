"""Repository control (Triton's repository extension), behind the admin bearer token."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError, InvalidRequest
from gateway.http.responses import error_response, json_response
from gateway.repository.registry import ModelRegistry
from gateway.routing.plan import RoutePlan

Handler = Callable[[Request], Awaitable[Response]]

DISABLED = (
    "admin endpoints are disabled: start the gateway with --admin-token TOKEN "
    "(or GATEWAY_ADMIN_TOKEN=TOKEN) and send 'Authorization: Bearer TOKEN'"
)
UNAUTHORIZED = (
    "missing or wrong admin token: send 'Authorization: Bearer <the --admin-token value>'"
)


def guarded(handler: Handler) -> Handler:
    """Answer 403 when no token is configured and 401 unless the request carries it."""

    async def check(request: Request) -> Response:
        token: str | None = request.state.admin_token
        if token is None:
            return json_response({"error": DISABLED}, 403)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # compare_digest takes as long for a near miss as for a wild guess
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            return json_response({"error": UNAUTHORIZED}, 401, {"www-authenticate": "Bearer"})
        try:
            return await handler(request)
        except GatewayError as exc:
            return error_response(exc)

    return check


def _registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.state.service.registry
    return registry


@guarded
async def repository_index(request: Request) -> Response:
    body = await request.body()
    ready_only = False
    if body.strip():
        try:
            options = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
        if not isinstance(options, dict) or not isinstance(options.get("ready", False), bool):
            raise InvalidRequest('body must be empty or {"ready": true|false}')
        ready_only = options.get("ready", False)
    rows = _registry(request).index()
    if ready_only:
        rows = [row for row in rows if row["state"] == "READY"]
    return json_response(rows)


@guarded
async def load_model(request: Request) -> Response:
    name = request.path_params["model"]
    served = await _registry(request).load_model(name)
    if not served.ready:
        problems = served.error or "; ".join(
            f"version {v}: {why}" for v, why in sorted(served.failures.items())
        )
        raise InvalidRequest(f"model '{name}' has no version that loads: {problems}")
    return json_response({"name": name, "versions": [str(v) for v in sorted(served.versions)]})


@guarded
async def unload_model(request: Request) -> Response:
    name = request.path_params["model"]
    await _registry(request).unload_model(name)
    return json_response({"name": name, "unloaded": True})


@guarded
async def get_routing(request: Request) -> Response:
    served = _registry(request).model(request.path_params["model"])
    plan = served.routing or RoutePlan()
    return json_response({"model": served.name, **plan.to_json()})


@guarded
async def put_routing(request: Request) -> Response:
    name = request.path_params["model"]
    _registry(request).model(name)  # 404 before looking at the body
    try:
        document = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    served = await _registry(request).set_routing(name, RoutePlan.from_json(document))
    plan = served.routing or RoutePlan()
    return json_response({"model": name, **plan.to_json()})
