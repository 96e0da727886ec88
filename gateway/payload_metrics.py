"""The payload log's metrics (SPEC 14): records written, and records dropped by why."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

DROP_REASONS = ("queue_full", "sink_error", "shutdown")


class PayloadMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.written = Counter(
            "gateway_payload_records",
            "Payload records written to the payload log",
            registry=registry,
        )
        self.dropped = Counter(
            "gateway_payload_dropped",
            "Payload records not written: queue_full (the writer fell behind), "
            "sink_error (the file or Redis failed), shutdown (still queued at exit)",
            ["reason"],
            registry=registry,
        )
        for reason in DROP_REASONS:
            self.dropped.labels(reason)

    def wrote(self, count: int) -> None:
        self.written.inc(count)

    def dropped_records(self, reason: str, count: int = 1) -> None:
        self.dropped.labels(reason).inc(count)
