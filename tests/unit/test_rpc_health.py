"""The gRPC health service follows readiness, and says NOT_SERVING once shutdown
starts (so that a balancer stops sending before the drain ends)."""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_health.v1 import health_pb2

from gateway.rpc.health import LIVENESS, GatewayHealth
from gateway.rpc.messages import SERVICE

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _Readiness:
    def __init__(self) -> None:
        self.is_ready = False

    def ready(self) -> bool:
        return self.is_ready


def _check(health: GatewayHealth, service: str) -> Any:
    request = health_pb2.HealthCheckRequest(service=service)
    return asyncio.run(health.Check(request, None)).status


def test_readiness_liveness_and_shutdown() -> None:
    readiness = _Readiness()
    health = GatewayHealth(readiness)  # type: ignore[arg-type]
    assert [_check(health, name) for name in ("", SERVICE, LIVENESS)] == [
        NOT_SERVING,
        NOT_SERVING,
        SERVING,
    ]
    readiness.is_ready = True
    assert _check(health, "") == _check(health, SERVICE) == SERVING
    health.stopping = True
    assert [_check(health, name) for name in ("", SERVICE, LIVENESS)] == [NOT_SERVING] * 3
