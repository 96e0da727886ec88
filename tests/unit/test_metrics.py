"""The metrics module: fast paths must export exactly what prometheus_client would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.metrics import LATENCY_BUCKETS, Metrics
from gateway.tallies import Spread, Tally

VALUES = [0.0, 0.00005, 0.0001, 0.00025, 0.0003, 0.004, 0.01, 0.5, 3.0, 10.0, 11.0, 1e9]


def test_tallies_export_what_prometheus_client_would() -> None:
    reference, fast = CollectorRegistry(), CollectorRegistry()
    slow_histogram = Histogram("h", "help", ["l"], buckets=LATENCY_BUCKETS, registry=reference)
    fast_histogram = Histogram("h", "help", ["l"], buckets=LATENCY_BUCKETS, registry=fast)
    slow_counter = Counter("c", "help", ["l"], registry=reference)
    fast_counter = Counter("c", "help", ["l"], registry=fast)
    spread = Spread(fast_histogram.labels("x"))
    tally = Tally(fast_counter.labels("x"))
    for _ in range(2):  # flushing twice must not count anything twice
        for value in VALUES:
            slow_histogram.labels("x").observe(value)
            spread.observe(value)
            slow_counter.labels("x").inc()
            tally.count += 1
        spread.flush()
        tally.flush()

    def text(registry: CollectorRegistry) -> list[str]:
        lines = generate_latest(registry).decode().splitlines()
        return [line for line in lines if "_created" not in line and "_sum" not in line]

    assert text(fast) == text(reference)
    # the sum is added in a different order, so only to rounding
    fast_sum = fast.get_sample_value("h_sum", {"l": "x"})
    assert fast_sum == pytest.approx(reference.get_sample_value("h_sum", {"l": "x"}))


def test_request_and_batch_metrics() -> None:
    metrics = Metrics()
    metrics.request_done("m", "1", "v2", 200, 0.002)
    metrics.request_done("m", "1", "v2", 200, 0.004)
    metrics.request_done("", "", "v2", 404, 0.001)
    batch = metrics.batch_observer("m", 1)
    batch.dispatched(8, "idle")
    batch.waited(0.001)
    batch.ran(0.003)
    batch.track_depth(lambda: 5)
    metrics.flush()
    get = metrics.registry.get_sample_value
    labels = {"model": "m", "version": "1"}
    assert get("gateway_requests_total", {**labels, "protocol": "v2", "code": "200"}) == 2
    assert get("gateway_request_duration_seconds_count", labels) == 2
    assert get("gateway_request_duration_seconds_sum", labels) == 0.006
    assert (
        get("gateway_requests_total", {"model": "", "version": "", "protocol": "v2", "code": "404"})
        == 1
    )
    assert get("gateway_batch_size_sum", labels) == 8
    assert get("gateway_batch_dispatch_total", {**labels, "reason": "idle"}) == 1
    assert get("gateway_queue_duration_seconds_count", labels) == 1
    assert get("gateway_inference_duration_seconds_sum", labels) == 0.003
    assert get("gateway_queue_depth", labels) == 5
