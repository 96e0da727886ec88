"""Shadow traffic over HTTP: copied to the shadow version after the answer, compared,
never felt by the caller."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from gateway.config import Settings
from gateway.repository.version import ModelVersion
from tests import onnx_models
from tests.conftest import (
    EXAMPLES,
    RunningGateway,
    metric_value,
    start_gateway,
    stop_gateway,
    wait_for_metric,
)

pytestmark = pytest.mark.integration

TOKEN = "shadow-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROW = {"a": [1, 1, 1, 1], "b": [1, 1, 1, 1]}


@dataclass
class ShadowGateway:
    running: RunningGateway
    log: Path  # --shadow-log


@pytest.fixture(scope="module")
def shadow_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShadowGateway]:
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
    yield ShadowGateway(running, log)
    stop_gateway(running)


def test_shadow_comparison_of_two_real_classifiers(shadow_gateway: ShadowGateway) -> None:
    url = shadow_gateway.running.url
    images = np.random.default_rng(8).integers(0, 17, size=(150, 64)).tolist()
    with httpx.Client(base_url=url, timeout=30) as client:
        for index, image in enumerate(images):
            response = client.post(
                "/v1/models/digits:predict",
                json={"instances": [image]},
                headers={"x-request-id": f"img-{index}"},
            )
            assert response.status_code == 200
            assert response.headers["x-model-version"] == "1"  # the shadow never answers
    labels = {"model": "digits", "primary": "1", "shadow": "2"}
    text = wait_for_metric(url, "gateway_shadow_requests_total", 150, **labels)
    assert metric_value(text, "gateway_shadow_errors_total", **labels) == 0
    disagreements = metric_value(text, "gateway_shadow_disagreements_total", **labels)
    assert 0 < disagreements < 150  # two decent classifiers: mostly, not always, agreeing
    assert metric_value(text, "gateway_shadow_abs_diff_count", **labels) == 150
    lines = [orjson.loads(x) for x in shadow_gateway.log.read_bytes().splitlines()]
    logged = {line["request_id"]: line for line in lines if line["model"] == "digits"}
    assert len(logged) == 150 and "img-7" in logged
    entry = logged["img-7"]
    assert entry["primary_version"] == "1" and entry["shadow_version"] == "2"
    assert len(entry["primary"]["probabilities"]) == 10 == len(entry["shadow"]["probabilities"])
    assert sum(line["disagreeing_rows"] for line in logged.values()) == disagreements


def _answers(client: httpx.Client, count: int) -> None:
    for _ in range(count):
        response = client.post("/v1/models/pair:predict", json={"instances": [ROW]})
        assert response.status_code == 200
        assert response.headers["x-model-version"] == "1"
        assert response.json()["predictions"][0]["sum"] == [2.0, 2.0, 2.0, 2.0]


def test_the_caller_has_its_answer_before_its_shadow_runs(
    shadow_gateway: ShadowGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shadow version's runs are held at a gate until every caller has its answer:
    the answers come while no shadow has finished (the caller never waits for its
    shadow), each shadow starts after its primary ran, and once the gate opens every
    shadow runs and is counted. Nothing here measures time."""
    events: list[str] = []  # appended by the server's thread and by this one
    gate = threading.Event()
    run = ModelVersion.run

    async def observed(
        version: ModelVersion,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str],
        *args: Any,
        **kwargs: Any,
    ) -> list[np.ndarray]:
        if version.info.model != "pair":
            return await run(version, inputs, output_names, *args, **kwargs)
        if version.label == "1":
            outputs = await run(version, inputs, output_names, *args, **kwargs)
            events.append("primary ran")
            return outputs
        events.append("shadow started")
        await asyncio.to_thread(gate.wait, 60)  # the server's event loop serves meanwhile
        outputs = await run(version, inputs, output_names, *args, **kwargs)
        events.append("shadow finished")
        return outputs

    monkeypatch.setattr(ModelVersion, "run", observed)
    url = shadow_gateway.running.url
    labels = {"model": "pair", "primary": "1", "shadow": "2"}
    with httpx.Client(base_url=url, timeout=30) as client:
        routed = client.put(
            "/admin/models/pair/routing",
            headers=AUTH,
            json={"weights": {"1": 1}, "shadow": {"version": 2}},
        )
        assert routed.status_code == 200, routed.text
        shadows = "gateway_shadow_requests_total"
        before = metric_value(client.get("/metrics").text, shadows, **labels)
        try:
            for index in range(5):
                _answers(client, 1)
                events.append(f"answer {index}")
            assert "shadow finished" not in events, events
            assert metric_value(client.get("/metrics").text, shadows, **labels) == before
        finally:
            gate.set()  # whatever happened: no shadow is left waiting
    wait_for_metric(url, shadows, before + 5, **labels)
    server_side = [e for e in events if not e.startswith("answer")]
    assert server_side.count("shadow started") == 5 == server_side.count("shadow finished")
    started = [i for i, e in enumerate(server_side) if e == "shadow started"]
    ran = [i for i, e in enumerate(server_side) if e == "primary ran"]
    assert len(ran) == 5 and all(p < s for p, s in zip(ran, started, strict=True)), events
    assert events.index("shadow finished") > events.index("answer 4"), events


def test_a_failing_shadow_never_changes_the_callers_status(
    shadow_gateway: ShadowGateway,
) -> None:
    url = shadow_gateway.running.url
    with httpx.Client(base_url=url, timeout=30) as client:
        routed = client.put(
            "/admin/models/pair/routing",
            headers=AUTH,
            json={"weights": {"1": 1}, "shadow": {"version": 3}},
        )
        assert routed.status_code == 200
        _answers(client, 40)  # every answer is a 200 with the primary's result
    labels = {"model": "pair", "primary": "1", "shadow": "3"}
    text = wait_for_metric(url, "gateway_shadow_errors_total", 40, **labels)
    assert metric_value(text, "gateway_shadow_requests_total", **labels) == 40
