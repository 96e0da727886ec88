"""The inference endpoints as plain ASGI: the request path, read top to bottom.

The service runs the request (``gateway.service.call``); this module reads, decodes,
encodes and sends around it: ``call = service.call(...)`` -> ``call.admit(headers)``
(the routing choice) -> read the body (within --read-timeout) -> ``call.arrived()``
(routed again if its version was unloaded meanwhile; announced to its batcher) ->
decode (v2 or v1: a ``Codec``) and hand it to its batch (``call.start_v2`` /
``call.start_v1``) -> await the batch -> ``call.answer(...)`` -> encode -> send ->
``call.finish(status)`` (metrics, request log line, shadow run). Everything a caller
can get wrong becomes a GatewayError and a JSON ``{"error": ...}`` (one mapping:
``responses.error_parts``); a request still running when the drain after SIGTERM runs
out is answered 503.

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
from typing import Any, Protocol

import numpy as np
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import ClientGone, GatewayError, ModelNotReady
from gateway.http.body import arrived_body, read_body
from gateway.http.disconnect import CLIENT_CLOSED_REQUEST
from gateway.http.exchange import AsgiExchange, Exchange
from gateway.http.responses import error_parts, internal_error_body
from gateway.protocol import v1, v2
from gateway.service import InferenceCall, InferenceService
from gateway.service.call import InferResult

log = logging.getLogger("gateway.http")

_JSON = b"application/json"
_OCTET_STREAM = b"application/octet-stream"
MAX_REQUEST_ID = 128
_HEADER_LENGTH = v2.HEADER_LENGTH.encode()
# on answers to requests that sent entity ids: how many rows got the [features] defaults
_FEATURE_DEFAULTS = b"x-feature-defaults"
_WANTED = {b"x-request-id", b"content-length", b"content-encoding", _HEADER_LENGTH}

# a request handed to its batch: the batcher's awaitable, and what encoding needs of the
# request (v2: its id; v1: its row format)
Started = tuple[Awaitable[list[np.ndarray]], Any]
# (payload, media type, extra headers)
Encoded = tuple[bytes, bytes, list[tuple[bytes, bytes]]]


class Codec(Protocol):
    def start(
        self,
        call: InferenceCall,
        body: bytes,
        headers: dict[bytes, bytes],
        gone: Callable[[], bool] | None,
    ) -> Started:
        """Decode the body and hand it to ``call``'s batch."""

    def encode(self, call: InferenceCall, answer: InferResult, context: Any) -> Encoded: ...


class V2Codec:
    """The Open Inference Protocol's JSON body, with Triton's binary extension."""

    def start(
        self,
        call: InferenceCall,
        body: bytes,
        headers: dict[bytes, bytes],
        gone: Callable[[], bool] | None,
    ) -> Started:
        length = headers.get(_HEADER_LENGTH)
        decoded = v2.decode_request(body, None if length is None else length.decode("latin-1"))
        return call.start_v2(decoded, gone), decoded.id

    def encode(self, call: InferenceCall, answer: InferResult, context: Any) -> Encoded:
        target = answer.version
        payload, header_length = v2.encode_response(
            target.info.model, target.label, context, answer.outputs, answer.binary
        )
        extra = []
        defaults = call.feature_defaults
        if defaults is not None:  # entity ids were looked up
            extra.append((_FEATURE_DEFAULTS, b"%d" % defaults))
        if header_length is None:
            return payload, _JSON, extra
        extra.append((_HEADER_LENGTH, b"%d" % header_length))
        return payload, _OCTET_STREAM, extra


class V1Codec:
    """TF Serving's ``:predict`` (rows or columns)."""

    def start(
        self,
        call: InferenceCall,
        body: bytes,
        headers: dict[bytes, bytes],
        gone: Callable[[], bool] | None,
    ) -> Started:
        target = call.target
        assert target is not None  # arrived() routed it
        decoded = v1.decode_predict(body, target.signature)
        return call.start_v1(decoded.inputs, gone), decoded.row_format

    def encode(self, call: InferenceCall, answer: InferResult, context: Any) -> Encoded:
        return v1.encode_predict(answer.outputs, context), _JSON, []


class InferenceEndpoint:
    """One protocol's inference path: an ASGI app (path params from the router) and the
    handler a ConnectionExchange runs."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self._codec: Codec = V2Codec() if protocol == "v2" else V1Codec()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        exchange = AsgiExchange(scope, receive, send)
        await self.handle(exchange, params["model"], params.get("version"))

    async def handle(self, exchange: Exchange, model: str, version: str | None) -> None:
        state = exchange.state
        service: InferenceService = state["service"]
        headers = {k: v for k, v in exchange.headers if k in _WANTED}
        request_id = headers.get(b"x-request-id", b"")[:MAX_REQUEST_ID] or new_request_id()
        call = service.call(self.protocol, model, version, request_id)
        response_headers = [(b"x-request-id", request_id)]
        try:
            call.admit(exchange.headers)
            limit = state["max_body_bytes"]
            declared, encoding = headers.get(b"content-length"), headers.get(b"content-encoding")
            body = exchange.arrived_body()
            if body is None:
                body = await read_body(
                    exchange.receive, limit, declared, encoding, state["read_timeout"]
                )
            else:
                body = arrived_body(body, limit, declared, encoding)
            call.arrived()
            codec = self._codec
            running, context = codec.start(call, body, headers, exchange.gone)
            # the batch is awaited here, at the top: one suspension per request
            answer = call.answer(await running)
            payload, media_type, extra = codec.encode(call, answer, context)
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
        target = call.target
        if target is not None:
            response_headers.append((b"x-model-version", target.label_bytes))
        response_headers.append((b"content-type", media_type))
        response_headers.append((b"content-length", b"%d" % len(payload)))
        try:
            await exchange.respond(status, response_headers, payload)
        finally:  # recorded (and its batcher ticket, if still out, released) whatever happens
            call.finish(status)


def _shutting_down() -> GatewayError:
    """uvicorn cancels the requests still running when the drain timeout runs out (e.g.
    a body still arriving): they are answered, not dropped."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    return ModelNotReady("the gateway is shutting down; retry the request")


# generated ids: a random per-process prefix and a counter, unique without a syscall
_ID_PREFIX = os.urandom(8).hex().encode()
_id_counter = itertools.count(1)


def new_request_id() -> bytes:
    return b"%s-%x" % (_ID_PREFIX, next(_id_counter))


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
                await endpoint.handle(AsgiExchange(scope, receive, send), model, version)
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
