"""The inference endpoints as plain ASGI: the request path, read top to bottom.

resolve the version -> read the body (within --read-timeout; routed again if its
version was unloaded meanwhile) -> announce the request to its batcher -> decode (v2
or v1) -> look up features by entity id (v2, [features] models) -> run through the
batcher -> encode -> send. Everything a caller can get wrong becomes a GatewayError
and a JSON ``{"error": ...}``; a request still running when the drain after SIGTERM
runs out is answered 503.

These handlers skip Starlette's Request/Response objects: on a small model the
HTTP path is most of the cost, and every microsecond here is per request.
``InferenceRoutes`` dispatches the four inference paths straight to them and
hands everything else to the Starlette app.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Awaitable, Callable
from time import perf_counter

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.batching.ticket import Ticket
from gateway.errors import ClientGone, GatewayError, ModelNotReady
from gateway.http.body import read_body
from gateway.http.disconnect import CLIENT_CLOSED_REQUEST, disconnect_probe
from gateway.http.responses import error_parts, internal_error_body
from gateway.metrics import Metrics
from gateway.protocol import v1, v2
from gateway.repository.version import ModelVersion
from gateway.service import InferenceService, Route

log = logging.getLogger("gateway.http")
request_log = logging.getLogger("gateway.requests")

_JSON = b"application/json"
_OCTET_STREAM = b"application/octet-stream"
_MAX_REQUEST_ID = 128
_HEADER_LENGTH = v2.HEADER_LENGTH.encode()
# on answers to requests that sent entity ids: how many rows got the [features] defaults
_FEATURE_DEFAULTS = b"x-feature-defaults"
_WANTED = {b"x-request-id", b"content-length", b"content-encoding", _HEADER_LENGTH}

# (service, route, body, request headers, ticket, gone) -> (payload, media type, headers,
# the version that answered)
Encoded = tuple[bytes, bytes, list[tuple[bytes, bytes]], ModelVersion]
Runner = Callable[
    [InferenceService, Route, bytes, dict[bytes, bytes], Ticket, Callable[[], bool] | None],
    Awaitable[Encoded],
]


async def _run_v2(
    service: InferenceService,
    route: Route,
    body: bytes,
    headers: dict[bytes, bytes],
    ticket: Ticket,
    gone: Callable[[], bool] | None,
) -> Encoded:
    length = headers.get(_HEADER_LENGTH)
    decoded = v2.decode_request(body, None if length is None else length.decode("latin-1"))
    target = service.settle(route, decoded.inputs)
    pending = None
    if route.features is not None:  # rows still on their way wait in their batch
        pending = service.look_up_features(route, decoded.inputs, decoded.datatypes)
    result = await service.infer(target, decoded, ticket, gone, pending)
    service.plan_mirror(route, target, decoded.inputs, result.outputs)
    payload, header_length = v2.encode_response(
        target.info.model, target.label, decoded.id, result.outputs, result.binary
    )
    extra = []
    if route.features_store or route.features_default:  # entity ids were looked up
        extra.append((_FEATURE_DEFAULTS, str(route.features_default).encode()))
    if header_length is None:
        return payload, _JSON, extra, target
    extra.append((_HEADER_LENGTH, str(header_length).encode()))
    return payload, _OCTET_STREAM, extra, target


async def _run_v1(
    service: InferenceService,
    route: Route,
    body: bytes,
    headers: dict[bytes, bytes],
    ticket: Ticket,
    gone: Callable[[], bool] | None,
) -> Encoded:
    decoded = v1.decode_predict(body, route.target.signature)
    target = service.settle(route, decoded.inputs)
    outputs = await service.predict(target, decoded.inputs, ticket, gone)
    service.plan_mirror(route, target, decoded.inputs, outputs)
    return v1.encode_predict(outputs, decoded.row_format), _JSON, [], target


class InferenceEndpoint:
    """An ASGI app for one protocol's inference path (path params from the router)."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self._run: Runner = _run_v2 if protocol == "v2" else _run_v1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        await self.handle(scope, receive, send, params["model"], params.get("version"))

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, model: str, version: str | None
    ) -> None:
        started = perf_counter()
        state = scope["state"]
        service: InferenceService = state["service"]
        metrics: Metrics = state["metrics"]
        headers = {k: v for k, v in scope["headers"] if k in _WANTED}
        request_id = headers.get(b"x-request-id", b"")[:_MAX_REQUEST_ID] or _new_request_id()
        response_headers = [(b"x-request-id", request_id)]
        label = ""
        label_bytes = b""
        ticket: Ticket | None = None
        route: Route | None = None
        try:
            route = service.route(model, version, scope["headers"])
            target = route.target
            label, label_bytes = target.label, target.label_bytes
            body = await read_body(
                receive,
                state["max_body_bytes"],
                headers.get(b"content-length"),
                headers.get(b"content-encoding"),
                state["read_timeout"],
            )
            if target.retired:  # unloaded while the body arrived: route again
                route = service.route(model, version, scope["headers"])
                target = route.target
                label, label_bytes = target.label, target.label_bytes
            # announced only once the body is here: a slow body never holds a batch
            ticket = target.expect()
            gone = disconnect_probe(receive)
            payload, media_type, extra, target = await self._run(
                service, route, body, headers, ticket, gone
            )
            label, label_bytes = target.label, target.label_bytes
            status = 200
            response_headers += extra
        except ClientGone:
            status, payload, media_type = CLIENT_CLOSED_REQUEST, b"", _JSON
        except (GatewayError, asyncio.CancelledError) as caught:
            exc = caught if isinstance(caught, GatewayError) else _shutting_down()
            status, payload, extra = error_parts(exc)
            media_type = _JSON
            response_headers += extra
            if status >= 500:
                rid = request_id.decode("latin-1")
                log.warning(
                    "request %s to %s failed: %s",
                    rid,
                    model,
                    exc.message,
                    extra={"request_id": rid, "status": status},
                )
        except Exception:
            rid = request_id.decode("latin-1")
            log.exception(
                "request %s to %s failed unexpectedly",
                rid,
                model,
                extra={"request_id": rid, "status": 500},
            )
            status, payload, media_type = 500, internal_error_body(rid), _JSON
        finally:
            if ticket is not None:
                ticket.release()
        if label_bytes:
            response_headers.append((b"x-model-version", label_bytes))
        response_headers.append((b"content-type", media_type))
        response_headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})
        if status == 200 and route is not None and route.mirror is not None:
            route.mirror.request_id = request_id.decode("latin-1")
            state["shadows"].try_spawn(route.mirror)
        known = model if model in service.registry.state.models else ""
        elapsed = perf_counter() - started
        metrics.request_done(known, label, self.protocol, status, elapsed)
        if state["log_requests"]:
            features = None
            if route is not None and (route.features_store or route.features_default):
                features = (route.features_store, route.features_default)
            log_request(request_id, model, label, self.protocol, status, elapsed, ticket, features)


def _shutting_down() -> GatewayError:
    """uvicorn cancels the requests still running when the drain timeout runs out (e.g.
    a body still arriving): they are answered, not dropped."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    return ModelNotReady("the gateway is shutting down; retry the request")


# generated ids: a random per-process prefix and a counter, unique without a syscall
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(1)


def _new_request_id() -> bytes:
    return f"{_ID_PREFIX}-{next(_id_counter):x}".encode()


def log_request(
    request_id: bytes,
    model: str,
    version: str,
    protocol: str,
    status: int,
    seconds: float,
    ticket: Ticket | None,
    features: tuple[int, int] | None = None,
) -> None:
    """One line per request (debug level): with --log-format json, every field a key.
    ``features``: for a request that sent entity ids, its rows whose features came from
    the store (or its local cache) and those that got the [features] defaults."""
    queued = None if ticket is None or ticket.queued_s is None else ticket.queued_s * 1000
    ran = None if ticket is None or ticket.ran_s is None else ticket.ran_s * 1000
    rid = request_id.decode("latin-1")
    stored, defaulted = (None, None) if features is None else features
    request_log.debug(
        "%s %s v%s %s %d in %.2f ms (queue %s ms, inference %s ms)%s",
        protocol,
        model,
        version or "-",
        rid,
        status,
        seconds * 1000,
        "-" if queued is None else f"{queued:.2f}",
        "-" if ran is None else f"{ran:.2f}",
        "" if features is None else f"; features: {stored} from the store, {defaulted} defaults",
        extra={
            "request_id": rid,
            "model": model,
            "version": version,
            "protocol": protocol,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "queue_ms": None if queued is None else round(queued, 3),
            "inference_ms": None if ran is None else round(ran, 3),
            "features_store": stored,
            "features_default": defaulted,
        },
    )


INFER_V2 = InferenceEndpoint("v2")
PREDICT_V1 = InferenceEndpoint("v1")


class InferenceRoutes:
    """Pure ASGI in front of Starlette: POSTs to the inference paths go straight to their
    endpoint (no route table scan, no Request object); everything else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = match_inference_path(scope["path"])
            if match is not None:
                endpoint, model, version = match
                await endpoint.handle(scope, receive, send, model, version)
                return
        await self.app(scope, receive, send)


def match_inference_path(path: str) -> tuple[InferenceEndpoint, str, str | None] | None:
    """The endpoint, model and version for the four inference paths, else None.

    /v2/models/{m}/infer, /v2/models/{m}/versions/{v}/infer,
    /v1/models/{m}:predict, /v1/models/{m}/versions/{v}:predict
    """
    parts = path.split("/")
    count = len(parts)
    if count < 4 or parts[0] or parts[2] != "models" or not parts[3]:
        return None
    if parts[1] == "v2":
        if count == 5 and parts[4] == "infer":
            return INFER_V2, parts[3], None
        if count == 7 and parts[4] == "versions" and parts[5] and parts[6] == "infer":
            return INFER_V2, parts[3], parts[5]
        return None
    if parts[1] == "v1":
        last = parts[-1]
        if not last.endswith(":predict"):
            return None
        if count == 4 and len(last) > 8:
            return PREDICT_V1, last[:-8], None
        if count == 6 and parts[4] == "versions" and len(last) > 8:
            return PREDICT_V1, parts[3], last[:-8]
    return None
