"""The gRPC server: grpc.aio on the HTTP server's event loop, the servicer's RPCs
registered by name under ``inference.GRPCInferenceService``.

Its message size limits are the HTTP body limit (``--max-body-bytes``), so a request
too large for one transport is too large for the other (grpcio's default of 4 MiB
would refuse smaller requests than HTTP takes). ``SO_REUSEPORT`` (grpcio's default on
Linux) lets every worker of ``--workers N`` listen on the one port, as HTTP does.
"""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health_pb2_grpc

from gateway.rpc import messages
from gateway.rpc.health import GatewayHealth
from gateway.rpc.servicer import InferenceServicer

log = logging.getLogger("gateway.grpc")


async def start_grpc_server(
    servicer: InferenceServicer,
    health: GatewayHealth,
    host: str,
    port: int,
    max_message_bytes: int,
) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 1),
        ]
    )
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )
        for name, (request_type, response_type) in messages.methods().items()
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(messages.SERVICE, handlers),)
    )
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server.add_insecure_port(address)
    await server.start()
    log.info("gRPC (inference.GRPCInferenceService) on %s", address)
    return server


async def stop_grpc_server(server: grpc.aio.Server, health: GatewayHealth, grace_s: float) -> None:
    """Health checks answer NOT_SERVING; no new RPCs; those running get ``grace_s`` to
    finish (the HTTP drain's time)."""
    health.stopping = True
    await server.stop(grace_s)
