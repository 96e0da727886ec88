"""The GRPCInferenceService's RPCs: each asks the catalog or runs a service call, as the
HTTP handlers do, and turns a GatewayError into the status code SPEC 15 names with the
same message as HTTP.

ModelInfer, read top to bottom: ``service.call("grpc", ...)`` -> ``admit`` (routing;
the request metadata stands in for HTTP headers, so a sticky key header works the
same) -> ``arrived`` -> decode -> ``await call.infer`` -> encode -> ``finish`` (metrics
with ``protocol="grpc"``, the request log line, the shadow run, the payload record).
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

import grpc

from gateway import __version__
from gateway.errors import ClientGone, GatewayError, ModelNotReady
from gateway.http.admin import DISABLED, UNAUTHORIZED, bearer_matches
from gateway.http.disconnect import CLIENT_CLOSED_REQUEST
from gateway.http.handlers import EXTENSIONS
from gateway.http.inference import MAX_REQUEST_ID, new_request_id
from gateway.rpc import messages
from gateway.rpc.tensors import decode_request, encode_response
from gateway.service import InferenceService, ModelCatalog

log = logging.getLogger("gateway.grpc")

# the gRPC code for each HTTP status the gateway answers with (SPEC 15)
STATUS_CODES = {
    HTTPStatus.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    HTTPStatus.UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
    HTTPStatus.FORBIDDEN: grpc.StatusCode.UNAUTHENTICATED,
    HTTPStatus.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    HTTPStatus.REQUEST_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    HTTPStatus.CONFLICT: grpc.StatusCode.FAILED_PRECONDITION,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    HTTPStatus.TOO_MANY_REQUESTS: grpc.StatusCode.RESOURCE_EXHAUSTED,
    HTTPStatus.SERVICE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    HTTPStatus.GATEWAY_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_code(status: int) -> grpc.StatusCode:
    return STATUS_CODES.get(HTTPStatus(status), grpc.StatusCode.INTERNAL)


class InferenceServicer:
    def __init__(
        self, service: InferenceService, catalog: ModelCatalog, admin_token: str | None
    ) -> None:
        self.service = service
        self.catalog = catalog
        self.admin_token = admin_token

    # -- health and metadata ---------------------------------------------------------

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return messages.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return messages.ServerReadyResponse(ready=self.catalog.ready())

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self.catalog.model_ready(request.name, request.version or None)
        except ModelNotReady:
            return messages.ModelReadyResponse(ready=False)
        except GatewayError as exc:
            await _abort(context, exc)
        return messages.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return messages.ServerMetadataResponse(
            name="gateway", version=__version__, extensions=EXTENSIONS
        )

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            body = self.catalog.metadata(request.name, request.version or None)
        except GatewayError as exc:
            await _abort(context, exc)
        response = messages.ModelMetadataResponse(
            name=body["name"], versions=body["versions"], platform=body["platform"]
        )
        for side in ("inputs", "outputs"):
            for tensor in body[side]:
                getattr(response, side).add(
                    name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"]
                )
        return response

    # -- inference -------------------------------------------------------------------

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        headers = _headers(context)
        request_id = dict(headers).get(b"x-request-id", b"")[:MAX_REQUEST_ID]
        request_id = request_id or new_request_id()
        call = self.service.call(
            "grpc", request.model_name, request.model_version or None, request_id
        )
        status = 200
        try:
            call.admit(headers)
            call.arrived()
            decoded = decode_request(request)
            answer = await call.infer(decoded, context.cancelled)
            target = answer.version
            response = encode_response(target.info.model, target.label, decoded.id, answer.outputs)
        except ClientGone:
            status = CLIENT_CLOSED_REQUEST
            await context.abort(grpc.StatusCode.CANCELLED, "the client went away")
        except (GatewayError, asyncio.CancelledError) as caught:
            exc = (
                caught
                if isinstance(caught, GatewayError)
                else ModelNotReady("the gateway is shutting down; retry the request")
            )
            status = int(exc.status)
            await _abort(context, exc, _trailers(request_id, call))
        except Exception:
            status = 500
            rid = request_id.decode("latin-1")
            log.exception("gRPC request %s to %s failed unexpectedly", rid, request.model_name)
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"internal error (request id {rid}); the gateway log has details",
                _trailers(request_id, call),
            )
        finally:
            call.finish(status)
        context.set_trailing_metadata(_trailers(request_id, call))
        return response

    # -- the repository extension (behind the admin token) ----------------------------

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._authorize(context)
        response = messages.RepositoryIndexResponse()
        for row in self.catalog.index(request.ready):
            response.models.add(
                name=row["name"],
                version=row.get("version", ""),
                state=row.get("state", ""),
                reason=row.get("reason", ""),
            )
        return response

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._authorize(context)
        try:
            await self.catalog.load(request.model_name)
        except GatewayError as exc:
            await _abort(context, exc)
        return messages.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._authorize(context)
        try:
            await self.catalog.unload(request.model_name)
        except GatewayError as exc:
            await _abort(context, exc)
        return messages.RepositoryModelUnloadResponse()

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        """As HTTP's admin endpoints: refused without a configured token, and unless the
        ``authorization: Bearer TOKEN`` metadata carries it."""
        if self.admin_token is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, DISABLED)
        given = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                given = value
        if not bearer_matches(given, self.admin_token or ""):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHORIZED)


def _headers(context: grpc.aio.ServicerContext) -> list[tuple[bytes, bytes]]:
    """The request metadata as HTTP headers (text values only)."""
    return [
        (key.encode("latin-1"), value.encode("latin-1", "replace"))
        for key, value in context.invocation_metadata() or ()
        if isinstance(value, str)
    ]


def _trailers(request_id: bytes, call: Any) -> tuple[tuple[str, str], ...]:
    trailers = [("x-request-id", request_id.decode("latin-1"))]
    if call.target is not None:
        trailers.append(("x-model-version", call.target.label))
    defaults = call.feature_defaults
    if defaults is not None:  # entity ids were looked up: rows that got the defaults
        trailers.append(("x-feature-defaults", str(defaults)))
    return tuple(trailers)


async def _abort(
    context: grpc.aio.ServicerContext,
    exc: GatewayError,
    trailers: tuple[tuple[str, str], ...] = (),
) -> Any:
    await context.abort(status_code(int(exc.status)), exc.message, trailers)
