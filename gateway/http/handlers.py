"""Thin handlers: decode, call the service, encode. No business logic here."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from gateway import __version__
from gateway.errors import GatewayError
from gateway.http.responses import error_response, json_response
from gateway.metrics import Metrics
from gateway.repository.registry import ServedModel
from gateway.service import InferenceService
from gateway.workers import WorkerGroup

log = logging.getLogger("gateway.http")

EXTENSIONS = ["binary_tensor_data"]


async def server_metadata(request: Request) -> Response:
    return json_response({"name": "gateway", "version": __version__, "extensions": EXTENSIONS})


async def live(request: Request) -> Response:
    return json_response({"live": True})


async def ready(request: Request) -> Response:
    is_ready = request.state.service.registry.state.ready
    workers: WorkerGroup | None = request.state.workers
    if is_ready and workers is not None and not workers.all_ready():
        # this worker is, but a load balancer would reach only some of the processes
        is_ready = False
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


async def model_metadata(request: Request) -> Response:
    """The model's metadata; for a version's path, that version's alone (as Triton does).
    A model with [features] names, in ``parameters.features``, the entity input a caller
    may send instead of the input the features fill."""
    service: InferenceService = request.state.service
    model = request.path_params["model"]
    version = request.path_params.get("version")
    try:
        served = service.registry.model(model)
        target = service.resolve(model, version)
    except GatewayError as exc:
        return error_response(exc)
    signature = target.signature
    body: dict[str, object] = {
        "name": model,
        "versions": [target.label] if version is not None else served.labels,
        "platform": "onnxruntime_onnx",
        "inputs": [spec.metadata() for spec in signature.inputs],
        "outputs": [spec.metadata() for spec in signature.outputs],
    }
    if served.features is not None:
        body["parameters"] = {"features": served.features.metadata()}
    return json_response(body)


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
