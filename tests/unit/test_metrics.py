"""The metrics module: fast paths must export exactly what prometheus_client would."""

from __future__ import annotations

import asyncio
import contextlib
import platform
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway import __version__
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


def test_build_info_names_what_runs() -> None:
    metrics = Metrics()
    samples = [
        s for m in metrics.registry.collect() if m.name == "gateway_build_info" for s in m.samples
    ]
    assert len(samples) == 1 and samples[0].value == 1
    assert samples[0].labels["version"] == __version__
    assert samples[0].labels["python"] == platform.python_version()
    assert samples[0].labels["onnxruntime"] not in ("", "unknown")


def test_model_info_follows_what_serves() -> None:
    metrics = Metrics()
    get = metrics.registry.get_sample_value
    depth = metrics.batch_observer("m", 1)
    depth.track_depth(lambda: 3)
    metrics.serving([("m", 1, "aaa"), ("m", 2, "bbb")])
    metrics.flush()
    assert get("gateway_model_info", {"model": "m", "version": "1", "sha256": "aaa"}) == 1
    assert get("gateway_model_info", {"model": "m", "version": "2", "sha256": "bbb"}) == 1
    assert get("gateway_queue_depth", {"model": "m", "version": "1"}) == 3
    # version 1 replaced by a new file, version 2 gone
    metrics.serving([("m", 1, "ccc")])
    metrics.flush()
    assert get("gateway_model_info", {"model": "m", "version": "1", "sha256": "aaa"}) is None
    assert get("gateway_model_info", {"model": "m", "version": "2", "sha256": "bbb"}) is None
    assert get("gateway_model_info", {"model": "m", "version": "1", "sha256": "ccc"}) == 1
    assert get("gateway_queue_depth", {"model": "m", "version": "1"}) == 3
    metrics.serving([])
    metrics.flush()
    assert get("gateway_queue_depth", {"model": "m", "version": "1"}) is None


def test_several_workers_leave_zeros_not_gaps(tmp_path: Path) -> None:
    # another worker may still serve a version this one dropped: a gauge it cannot
    # remove from the shared files is set to 0
    metrics = Metrics(shared_dir=tmp_path)
    metrics.serving([("m", 1, "aaa")])
    metrics.serving([])
    labels = {"model": "m", "version": "1", "sha256": "aaa"}
    assert metrics.registry.get_sample_value("gateway_model_info", labels) == 0


def test_flush_every_flushes_until_cancelled() -> None:
    asyncio.run(_flush_every_flushes_until_cancelled())


async def _flush_every_flushes_until_cancelled() -> None:
    metrics = Metrics()
    flushing = asyncio.get_running_loop().create_task(metrics.flush_every(0.01))
    metrics.request_done("m", "1", "v2", 200, 0.001)
    labels = {"model": "m", "version": "1", "protocol": "v2", "code": "200"}
    for _ in range(200):
        if metrics.registry.get_sample_value("gateway_requests_total", labels) == 1:
            break
        await asyncio.sleep(0.01)
    assert metrics.registry.get_sample_value("gateway_requests_total", labels) == 1
    metrics.request_done("m", "1", "v2", 200, 0.001)
    flushing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flushing
    # the last counts are flushed on the way out
    assert metrics.registry.get_sample_value("gateway_requests_total", labels) == 2
