"""Every Prometheus metric the gateway exports, defined on an injected registry.

Labels name the version that actually answered, never the one asked for.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# request latency from a fraction of a millisecond (batch 1, small model) to seconds
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "gateway_requests",
            "Inference requests answered, by the version that answered and status code",
            ["model", "version", "protocol", "code"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "gateway_request_duration_seconds",
            "Time from a request's arrival to its response, by the version that answered",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_loads = Counter(
            "gateway_model_loads",
            "Model version load attempts by outcome (success, failed)",
            ["model", "version", "outcome"],
            registry=self.registry,
        )

    def model_loaded(self, model: str, version: int, outcome: str) -> None:
        self.model_loads.labels(model, str(version), outcome).inc()

    def request_done(
        self, model: str, version: str, protocol: str, code: int, seconds: float
    ) -> None:
        self.requests.labels(model, version, protocol, str(code)).inc()
        if version:
            self.request_duration.labels(model, version).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
