"""Dynamic batching seen from outside: concurrent callers, metrics, hung-up callers."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import pytest

from tests.conftest import RunningGateway, metric_value
from tests.integration.test_errors import _in_background, _slow_body, _wait_until_busy

pytestmark = pytest.mark.integration


def test_concurrent_callers_each_get_their_own_rows(
    gateway: RunningGateway, test_repository: Path
) -> None:
    rng = np.random.default_rng(99)
    images = rng.integers(0, 17, size=(400, 64)).astype(np.float32)
    session = ort.InferenceSession(str(test_repository / "digits" / "2" / "model.onnx"))
    expected = session.run(None, {"pixels": images})[0]
    before = httpx.get(f"{gateway.url}/metrics").text

    def call(index: int) -> np.ndarray:
        body = {
            "id": str(index),
            "inputs": [
                {
                    "name": "pixels",
                    "shape": [1, 64],
                    "datatype": "FP32",
                    "data": images[index].tolist(),
                }
            ],
        }
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            response = client.post("/v2/models/digits/versions/2/infer", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["id"] == str(index)
        return np.array(response.json()["outputs"][0]["data"], dtype=np.float32)

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, range(len(images))))
    for index, row in enumerate(results):
        np.testing.assert_allclose(row, expected[index], rtol=1e-5, atol=1e-7)

    after = httpx.get(f"{gateway.url}/metrics").text
    labels = {"model": "digits", "version": "2"}
    rows = metric_value(after, "gateway_batch_size_sum", **labels) - metric_value(
        before, "gateway_batch_size_sum", **labels
    )
    batches = metric_value(after, "gateway_batch_size_count", **labels) - metric_value(
        before, "gateway_batch_size_count", **labels
    )
    assert rows == len(images)
    assert batches <= len(images)
    dispatched = sum(
        metric_value(after, "gateway_batch_dispatch_total", reason=reason, **labels)
        for reason in ("full", "preferred", "delay", "idle")
    )
    assert dispatched >= batches
    assert "gateway_queue_duration_seconds_bucket" in after
    assert "gateway_inference_duration_seconds_bucket" in after
    assert 'gateway_queue_depth{model="digits",version="2"} 0.0' in after


def test_a_caller_that_hangs_up_is_dropped_before_its_batch_runs(
    gateway: RunningGateway, client: httpx.Client
) -> None:
    labels = {"model": "slow", "version": "1"}
    results: list[httpx.Response] = []
    thread = _in_background(gateway, 1500, results)
    try:
        _wait_until_busy(client)
        before = metric_value(client.get("/metrics").text, "gateway_batch_size_sum", **labels)
        body, length = _slow_body(7)
        head = (
            f"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            f"Inference-Header-Content-Length: {length}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", gateway.port)) as raw:
            raw.sendall(head + body)
            queued = False
            deadline = time.monotonic() + 10
            while not queued and time.monotonic() < deadline:  # until the gateway queued it
                queued = (
                    metric_value(client.get("/metrics").text, "gateway_queue_depth", **labels) >= 1
                )
            assert queued
        # the socket is closed now; the queued request must leave the queue
    finally:
        thread.join(timeout=60)
    assert results[0].status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = client.get("/metrics").text
        if metric_value(text, "gateway_queue_depth", **labels) == 0:
            break
        time.sleep(0.01)
    after = metric_value(text, "gateway_batch_size_sum", **labels)
    # the blocker's rows were counted when it started; nothing else ran since, in
    # particular not the hung-up request's 7 rows
    assert after == before
    assert metric_value(text, "gateway_queue_depth", **labels) == 0
    ok = client.post(
        "/v2/models/slow/infer",
        content=_slow_body(2)[0],
        headers={"Inference-Header-Content-Length": str(_slow_body(2)[1])},
    )
    assert ok.status_code == 200
    assert orjson.loads(ok.content)["outputs"][0]["shape"] == [2]
