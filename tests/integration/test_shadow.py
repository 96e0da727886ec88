"""Shadow traffic over HTTP: mirrored after the answer, compared, never felt by the caller."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest

from gateway.config import Settings
from tests import onnx_models
from tests.conftest import EXAMPLES, RunningGateway, metric_value, start_gateway, stop_gateway

pytestmark = pytest.mark.integration

TOKEN = "shadow-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROW = {"a": [1, 1, 1, 1], "b": [1, 1, 1, 1]}


@pytest.fixture(scope="module")
def shadow_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("shadow")
    import shutil

    shutil.copytree(EXAMPLES / "digits", root / "digits")
    onnx_models.write_config(
        root, "digits", '[routing]\nweights = { "1" = 1 }\n[routing.shadow]\nversion = 2\n'
    )
    onnx_models.write_model(root, "pair", 1, onnx_models.scaled_sum(1.0))
    onnx_models.write_model(root, "pair", 2, onnx_models.slow_sum(1.0))
    onnx_models.write_model(root, "pair", 3, onnx_models.failing_sum())
    onnx_models.write_config(
        root,
        "pair",
        '[model]\nversions = "all"\n[runtime]\nintra_op_threads = 1\n'
        '[routing]\nweights = { "1" = 1 }\n',
    )
    log = root.parent / "shadow.jsonl"
    running = start_gateway(Settings(model_repository=root, admin_token=TOKEN, shadow_log=log))
    running.shadow_log = log  # type: ignore[attr-defined]
    yield running
    stop_gateway(running)


def _wait_for_metric(url: str, name: str, minimum: float, **labels: str) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics").text
        if metric_value(text, name, **labels) >= minimum:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{name} never reached {minimum}")


def test_shadow_comparison_of_two_real_classifiers(shadow_gateway: RunningGateway) -> None:
    images = np.random.default_rng(8).integers(0, 17, size=(150, 64)).tolist()
    with httpx.Client(base_url=shadow_gateway.url, timeout=30) as client:
        for index, image in enumerate(images):
            response = client.post(
                "/v1/models/digits:predict",
                json={"instances": [image]},
                headers={"x-request-id": f"img-{index}"},
            )
            assert response.status_code == 200
            assert response.headers["x-model-version"] == "1"  # the shadow never answers
    labels = {"model": "digits", "primary": "1", "shadow": "2"}
    text = _wait_for_metric(shadow_gateway.url, "gateway_shadow_requests_total", 150, **labels)
    assert metric_value(text, "gateway_shadow_errors_total", **labels) == 0
    disagreements = metric_value(text, "gateway_shadow_disagreements_total", **labels)
    assert 0 < disagreements < 150  # two decent classifiers: mostly, not always, agreeing
    assert metric_value(text, "gateway_shadow_abs_diff_count", **labels) == 150
    lines = [orjson.loads(x) for x in shadow_gateway.shadow_log.read_bytes().splitlines()]  # type: ignore[attr-defined]
    logged = {line["request_id"]: line for line in lines if line["model"] == "digits"}
    assert len(logged) == 150 and "img-7" in logged
    entry = logged["img-7"]
    assert entry["primary_version"] == "1" and entry["shadow_version"] == "2"
    assert len(entry["primary"]["probabilities"]) == 10 == len(entry["shadow"]["probabilities"])
    assert sum(line["disagreeing_rows"] for line in logged.values()) == disagreements


def _latencies(client: httpx.Client, count: int) -> list[float]:
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.post("/v1/models/pair:predict", json={"instances": [ROW]})
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200
        assert response.json()["predictions"][0]["sum"] == [2.0, 2.0, 2.0, 2.0]
    return timings


def test_a_slow_shadow_does_not_slow_the_caller(shadow_gateway: RunningGateway) -> None:
    with httpx.Client(base_url=shadow_gateway.url, timeout=30) as client:
        alone = statistics.median(_latencies(client, 30))
        routed = client.put(
            "/admin/models/pair/routing",
            headers=AUTH,
            json={"weights": {"1": 1}, "shadow": {"version": 2}},
        )
        assert routed.status_code == 200, routed.text
        before = httpx.get(f"{shadow_gateway.url}/metrics").text
        mirrored = statistics.median(_latencies(client, 30))
    labels = {"model": "pair", "primary": "1", "shadow": "2"}
    started = metric_value(before, "gateway_shadow_requests_total", **labels)
    text = _wait_for_metric(shadow_gateway.url, "gateway_shadow_requests_total", 1, **labels)
    slow_runs = metric_value(
        text, "gateway_inference_duration_seconds_sum", model="pair", version="2"
    )
    slow_count = metric_value(
        text, "gateway_inference_duration_seconds_count", model="pair", version="2"
    )
    assert slow_count >= 1 and started >= 0
    shadow_run = slow_runs / slow_count
    # generous: the caller's median stays far below one shadow run, and near its own baseline
    assert mirrored < max(shadow_run / 2, 5 * alone), (alone, mirrored, shadow_run)


def test_a_failing_shadow_never_changes_the_callers_status(
    shadow_gateway: RunningGateway,
) -> None:
    with httpx.Client(base_url=shadow_gateway.url, timeout=30) as client:
        routed = client.put(
            "/admin/models/pair/routing",
            headers=AUTH,
            json={"weights": {"1": 1}, "shadow": {"version": 3}},
        )
        assert routed.status_code == 200
        _latencies(client, 40)  # every answer is a 200 with the primary's result
    labels = {"model": "pair", "primary": "1", "shadow": "3"}
    text = _wait_for_metric(shadow_gateway.url, "gateway_shadow_errors_total", 40, **labels)
    assert metric_value(text, "gateway_shadow_requests_total", **labels) == 40
