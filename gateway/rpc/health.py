"""The standard gRPC health service (``grpc.health.v1.Health``), for Kubernetes' gRPC
probes and load balancers: ``Check`` with the service ``""`` or
``inference.GRPCInferenceService`` answers SERVING when the gateway is ready (as
``/v2/health/ready``: a model can answer in every worker), ``liveness`` answers
SERVING while the process serves at all. From the start of shutdown every check
answers NOT_SERVING, so a balancer stops sending before the drain ends.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.rpc.messages import SERVICE
from gateway.service import ModelCatalog

LIVENESS = "liveness"
_READINESS = ("", SERVICE)


class GatewayHealth(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    def __init__(self, catalog: ModelCatalog) -> None:
        self.catalog = catalog
        self.stopping = False

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        service = request.service
        if service not in (*_READINESS, LIVENESS):
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"unknown service {service!r}: ask for '' or {SERVICE!r} (ready to serve) "
                f"or {LIVENESS!r} (alive)",
            )
        serving = not self.stopping and (service == LIVENESS or self.catalog.ready())
        status = health_pb2.HealthCheckResponse
        return status(status=status.SERVING if serving else status.NOT_SERVING)
