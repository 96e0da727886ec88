"""Health, metadata and metrics: ask the catalog, encode its answer. No logic here."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from gateway import __version__
from gateway.errors import GatewayError
from gateway.http.responses import error_response, json_response
from gateway.metrics import Metrics
from gateway.service import ModelCatalog

log = logging.getLogger("gateway.http")

EXTENSIONS = ["binary_tensor_data"]


async def server_metadata(request: Request) -> Response:
    return json_response({"name": "gateway", "version": __version__, "extensions": EXTENSIONS})


async def live(request: Request) -> Response:
    return json_response({"live": True})


async def ready(request: Request) -> Response:
    is_ready = _catalog(request).ready()
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


async def model_metadata(request: Request) -> Response:
    model, version = _model_and_version(request)
    try:
        return json_response(_catalog(request).metadata(model, version))
    except GatewayError as exc:
        return error_response(exc)


async def model_ready(request: Request) -> Response:
    model, version = _model_and_version(request)
    try:
        return json_response(_catalog(request).model_ready(model, version))
    except GatewayError as exc:
        return error_response(exc)


async def model_status_v1(request: Request) -> Response:
    """TF Serving's GET /v1/models/{model}: the state of each version."""
    model, version = _model_and_version(request)
    try:
        rows = _catalog(request).version_status(model, version)
    except GatewayError as exc:
        return error_response(exc)
    return json_response({"model_version_status": rows})


async def metrics(request: Request) -> Response:
    tallies: Metrics = request.state.metrics
    return Response(tallies.render(), media_type=tallies.content_type)


def _catalog(request: Request) -> ModelCatalog:
    catalog: ModelCatalog = request.state.catalog
    return catalog


def _model_and_version(request: Request) -> tuple[str, str | None]:
    return request.path_params["model"], request.path_params.get("version")
