"""The service on tiny real ONNX models, without HTTP: admit -> arrived -> infer -> finish."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from gateway.errors import GatewayError, InvalidRequest, ModelNotFound
from gateway.metrics import Metrics
from gateway.protocol import v2
from gateway.repository.registry import ModelRegistry
from gateway.routing.shadow import ShadowScheduler
from gateway.service import InferenceCall, InferenceService, InferResult
from gateway.service.feature_wiring import FeatureWiring
from tests import onnx_models
from tests.conftest import EXAMPLES

_DATATYPES = {"a": "FP32", "b": "INT64", "features": "FP32"}
ROW = {"a": [1.0, 2.0, 3.0, 4.0], "b": [1, 1, 1, 1]}


def _repository(root: Path) -> Path:
    for name, config in [
        ("sum", '[model]\nversions = "all"\n'),
        ("shadowed", '[routing]\nweights = { "1" = 1 }\n[routing.shadow]\nversion = 2\n'),
        ("sticky", '[routing]\nweights = { "1" = 50, "2" = 50 }\nsticky_key = "x-user-id"\n'),
    ]:
        for version, scale in [(1, 1.0), (2, 2.0)]:
            onnx_models.write_model(root, name, version, onnx_models.scaled_sum(scale))
        if config:
            onnx_models.write_config(root, name, config)
    shutil.copytree(EXAMPLES / "fraud", root / "fraud")
    return root


def _request(**inputs: Any) -> v2.InferRequest:
    document = {
        "inputs": [
            {
                "name": name,
                "datatype": _DATATYPES.get(name, "BYTES"),
                "shape": [len(data)] if name == "user_id" else [1, len(data)],
                "data": data,
            }
            for name, data in inputs.items()
        ]
    }
    return v2.decode_request(orjson.dumps(document), None)


Scenario = Callable[[InferenceService, Metrics, ShadowScheduler], Awaitable[None]]


def _run(root: Path, scenario: Scenario) -> None:
    async def main() -> None:
        metrics = Metrics()
        async with ModelRegistry(
            _repository(root), observer=metrics, features=FeatureWiring(observers=metrics)
        ) as registry:
            shadows = ShadowScheduler(metrics)
            try:
                await scenario(InferenceService(registry, metrics, shadows), metrics, shadows)
            finally:
                await shadows.aclose(5.0)

    asyncio.run(main())


async def _infer(
    service: InferenceService,
    model: str,
    version: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    **inputs: Any,
) -> tuple[InferenceCall, InferResult]:
    call = service.call("v2", model, version, b"rid-1")
    call.admit(headers or [])
    call.arrived()
    answer = await call.infer(_request(**(inputs or ROW)), None)
    return call, answer


def _requests(metrics: Metrics, model: str, version: str, code: int) -> float | None:
    metrics.render()  # flushes the per-request tallies
    labels = {"model": model, "version": version, "protocol": "v2", "code": str(code)}
    return metrics.registry.get_sample_value("gateway_requests_total", labels)


def test_explicit_version_and_highest_by_default(tmp_path: Path) -> None:
    async def scenario(service: InferenceService, metrics: Metrics, _: ShadowScheduler) -> None:
        call, answer = await _infer(service, "sum")
        assert answer.version.label == "2"
        assert answer.outputs[0][0] == "sum"
        np.testing.assert_allclose(answer.outputs[0][1], [[4.0, 6.0, 8.0, 10.0]])
        call.finish(200)
        call, answer = await _infer(service, "sum", "1")
        assert answer.version.label == "1" and call.target is answer.version
        np.testing.assert_allclose(answer.outputs[0][1], [[2.0, 3.0, 4.0, 5.0]])
        call.finish(200)
        assert _requests(metrics, "sum", "2", 200) == 1
        assert _requests(metrics, "sum", "1", 200) == 1

    _run(tmp_path, scenario)


def test_weights_and_sticky_header(tmp_path: Path) -> None:
    async def scenario(service: InferenceService, *_: object) -> None:
        first, answer = await _infer(service, "shadowed")  # weights: all to version 1
        assert answer.version.label == "1"
        first.finish(200)
        chosen: dict[str, set[str]] = {}
        for user in [f"user-{n}" for n in range(24)] * 2:
            call = service.call("v2", "sticky", None, b"")
            target = call.admit([(b"x-user-id", user.encode())])
            chosen.setdefault(user, set()).add(target.label)
            call.finish(499)
        assert all(len(labels) == 1 for labels in chosen.values())  # a user keeps a version
        assert set().union(*chosen.values()) == {"1", "2"}  # and the weights split users

    _run(tmp_path, scenario)


def test_features_filled_from_the_models_store(tmp_path: Path) -> None:
    async def scenario(service: InferenceService, *_: object) -> None:
        call, answer = await _infer(service, "fraud", user_id=["u0001", "nobody", "u0042"])
        assert dict(answer.outputs)["label"].shape == (3,)
        assert (call.features_store, call.features_default) == (2, 1)
        assert call.feature_defaults == 1
        call.finish(200)
        typical = [41.0, 604.0, 1913.4, 6.0, 38.4, 0.0]
        plain, direct = await _infer(service, "fraud", features=typical)
        assert plain.feature_defaults is None  # no ids: nothing looked up
        assert direct.version.label == "1"
        plain.finish(200)

    _run(tmp_path, scenario)


def test_shadow_starts_only_after_a_200(tmp_path: Path) -> None:
    async def scenario(service: InferenceService, _: Metrics, shadows: ShadowScheduler) -> None:
        call, answer = await _infer(service, "shadowed")
        assert answer.version.label == "1"
        assert call.shadow_job is not None and shadows.in_flight == 0  # planned, not started
        call.finish(400)
        assert shadows.in_flight == 0
        call, answer = await _infer(service, "shadowed")
        call.finish(200)
        assert shadows.in_flight == 1
        assert call.shadow_job is not None and call.shadow_job.request_id == "rid-1"
        call, answer = await _infer(service, "sum")  # no shadow configured
        assert call.shadow_job is None
        call.finish(200)

    _run(tmp_path, scenario)


@pytest.mark.parametrize(
    ("model", "inputs", "error", "status", "message"),
    [
        ("nope", ROW, ModelNotFound, 404, "unknown model 'nope'"),
        ("sum", {"a": [1.0, 2.0, 3.0], "b": [1, 1, 1]}, InvalidRequest, 400, "shape"),
        ("sum", {"a": [1.0, 2.0, 3.0, 4.0]}, InvalidRequest, 400, "missing input(s) 'b'"),
    ],
)
def test_errors(
    tmp_path: Path,
    model: str,
    inputs: dict[str, Any],
    error: type[GatewayError],
    status: int,
    message: str,
) -> None:
    async def scenario(service: InferenceService, metrics: Metrics, _: ShadowScheduler) -> None:
        call = service.call("v2", model, None, b"bad")
        with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
            call.admit([])
            call.arrived()
            await call.infer(_request(**inputs), None)
        assert caught.value.status == status
        call.finish(status)  # releases the ticket, records the refusal
        assert call.ticket is None or call.ticket._queue is None
        version = "" if call.target is None else call.target.label
        assert _requests(metrics, model if model == "sum" else "", version, status) == 1

    _run(tmp_path, scenario)
