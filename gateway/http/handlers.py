"""Thin handlers: decode, call the service, encode. No business logic here."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from time import perf_counter

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from gateway import __version__
from gateway.batching.queue import Ticket
from gateway.errors import GatewayError
from gateway.http.body import read_body
from gateway.http.disconnect import CLIENT_CLOSED_REQUEST, ClientGone, until_disconnect
from gateway.http.responses import JSON, error_response, internal_error, json_response
from gateway.metrics import Metrics
from gateway.protocol import v1, v2
from gateway.repository.registry import ServedModel
from gateway.repository.version import ModelVersion
from gateway.service import InferenceService

log = logging.getLogger("gateway.http")

OCTET_STREAM = "application/octet-stream"
EXTENSIONS = ["binary_tensor_data"]
_MAX_REQUEST_ID = 128

# one inference protocol: (service, version, body, request headers) -> (payload, media type,
# extra response headers)
Encoded = tuple[bytes, str, dict[str, str] | None]
Runner = Callable[[InferenceService, ModelVersion, bytes, Headers, Ticket], Awaitable[Encoded]]


async def infer_v2(request: Request) -> Response:
    return await _inference(request, "v2", _run_v2)


async def predict_v1(request: Request) -> Response:
    return await _inference(request, "v1", _run_v1)


async def _run_v2(
    service: InferenceService, target: ModelVersion, body: bytes, headers: Headers, ticket: Ticket
) -> Encoded:
    decoded = v2.decode_request(body, headers.get(v2.HEADER_LENGTH))
    result = await service.infer(target, decoded, ticket)
    payload, header_length = v2.encode_response(
        target.info.model, target.label, decoded.id, result.outputs, result.binary
    )
    if header_length is None:
        return payload, JSON, None
    return payload, OCTET_STREAM, {v2.HEADER_LENGTH: str(header_length)}


async def _run_v1(
    service: InferenceService, target: ModelVersion, body: bytes, headers: Headers, ticket: Ticket
) -> Encoded:
    decoded = v1.decode_predict(body, target.signature)
    outputs = await service.predict(target, decoded.inputs, ticket)
    return v1.encode_predict(outputs, decoded.row_format), JSON, None


async def _inference(request: Request, protocol: str, run: Runner) -> Response:
    """What every inference request shares: ids, version headers, body limit, errors, metrics."""
    started = perf_counter()
    request_id = request.headers.get("x-request-id", "")[:_MAX_REQUEST_ID] or os.urandom(8).hex()
    headers = {"x-request-id": request_id}
    service: InferenceService = request.state.service
    model = request.path_params["model"]
    version = ""
    ticket: Ticket | None = None
    try:
        target = service.resolve(model, request.path_params.get("version"))
        version = headers["x-model-version"] = target.label
        # announced before the body is read, so a batch being cut may wait for it
        ticket = target.expect()
        body = await read_body(request, request.state.max_body_bytes)
        work = run(service, target, body, request.headers, ticket)
        payload, media_type, extra = await until_disconnect(request.receive, work)
        if extra:
            headers.update(extra)
        response = Response(payload, headers=headers, media_type=media_type)
    except ClientGone:
        response = Response(status_code=CLIENT_CLOSED_REQUEST, headers=headers)
    except GatewayError as exc:
        if exc.status >= 500:
            log.warning("request %s to %s failed: %s", request_id, model, exc.message)
        response = error_response(exc, headers)
    except Exception:
        log.exception("request %s to %s failed unexpectedly", request_id, model)
        response = internal_error(request_id, headers)
    finally:
        if ticket is not None:
            ticket.release()
    known = model if model in service.registry.state.models else ""
    request.state.metrics.request_done(
        known, version, protocol, response.status_code, perf_counter() - started
    )
    return response


async def server_metadata(request: Request) -> Response:
    return json_response({"name": "gateway", "version": __version__, "extensions": EXTENSIONS})


async def live(request: Request) -> Response:
    return json_response({"live": True})


async def ready(request: Request) -> Response:
    state = request.state.service.registry.state
    is_ready = state.loaded and any(m.ready for m in state.models.values())
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


async def model_metadata(request: Request) -> Response:
    service: InferenceService = request.state.service
    model = request.path_params["model"]
    try:
        served = service.registry.model(model)
        target = service.resolve(model, request.path_params.get("version"))
    except GatewayError as exc:
        return error_response(exc)
    signature = target.signature
    return json_response(
        {
            "name": model,
            "versions": [str(v) for v in sorted(served.versions)],
            "platform": "onnxruntime_onnx",
            "inputs": [spec.metadata() for spec in signature.inputs],
            "outputs": [spec.metadata() for spec in signature.outputs],
        }
    )


async def model_ready(request: Request) -> Response:
    service: InferenceService = request.state.service
    model = request.path_params["model"]
    version = request.path_params.get("version")
    try:
        service.resolve(model, version)
    except GatewayError as exc:
        return error_response(exc)
    body: dict[str, object] = {"name": model, "ready": True}
    if version is not None:
        body["version"] = version
    return json_response(body)


async def model_status_v1(request: Request) -> Response:
    """TF-Serving's GET /v1/models/{model}: the state of each version."""
    service: InferenceService = request.state.service
    try:
        served = service.registry.model(request.path_params["model"])
        wanted = request.path_params.get("version")
        if wanted is not None:
            service.resolve(served.name, wanted)
    except GatewayError as exc:
        return error_response(exc)
    return json_response({"model_version_status": _version_status(served, wanted)})


def _version_status(served: ServedModel, wanted: str | None) -> list[dict[str, object]]:
    rows = [(v, "AVAILABLE", "OK", "") for v in served.versions]
    rows += [(v, "END", "UNKNOWN", why) for v, why in served.failures.items()]
    return [
        {
            "version": str(v),
            "state": state,
            "status": {"error_code": code, "error_message": message},
        }
        for v, state, code, message in sorted(rows, reverse=True)
        if wanted is None or str(v) == wanted
    ]


async def metrics(request: Request) -> Response:
    registry: Metrics = request.state.metrics
    return Response(registry.render(), media_type=registry.content_type)
