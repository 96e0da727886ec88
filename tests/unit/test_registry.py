"""The registry on real ONNX files, without HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from gateway.errors import DeadlineExceeded, GatewayError, ModelNotFound, ModelNotReady, QueueFull
from gateway.metrics import Metrics
from gateway.repository.registry import ModelRegistry
from tests import onnx_models


def _load(root: Path, metrics: Metrics | None = None) -> ModelRegistry:
    registry = ModelRegistry(root, observer=metrics)
    asyncio.run(registry.load())
    return registry


def test_loads_good_versions_and_reports_bad_ones(test_repository: Path) -> None:
    metrics = Metrics()
    registry = _load(test_repository, metrics)
    try:
        state = registry.state
        assert sorted(state.models["digits"].versions) == [1, 2]
        assert registry.resolve("digits", None).info.version == 2
        assert registry.resolve("digits", "1").info.version == 1
        assert not state.models["broken"].ready
        assert "protobuf parsing failed" in state.models["broken"].failures[1]
        assert state.models["badconfig"].error is not None
        sample = metrics.registry.get_sample_value(
            "gateway_model_loads_total", {"model": "broken", "version": "1", "outcome": "failed"}
        )
        assert sample == 1.0
        config_failure = metrics.registry.get_sample_value(
            "gateway_model_loads_total", {"model": "badconfig", "version": "", "outcome": "failed"}
        )
        assert config_failure == 1.0
        problems = "\n".join(state.problems)
        assert "broken v1" in problems and "badconfig" in problems
    finally:
        registry.close()


@pytest.mark.parametrize(
    ("model", "version", "error", "message"),
    [
        ("nope", None, ModelNotFound, "unknown model 'nope'; models in the repository: "),
        ("../etc", None, ModelNotFound, "is not a valid model name"),
        ("digits", "9", ModelNotFound, "model 'digits' has no version 9; loaded versions: 1, 2"),
        ("digits", "v1", ModelNotFound, "versions are positive integers"),
        ("digits", "01", ModelNotFound, "versions are positive integers"),
        ("broken", None, ModelNotReady, "model 'broken' has no loaded version"),
        ("broken", "1", ModelNotReady, "version 1 of model 'broken' is not ready"),
        ("badconfig", None, ModelNotReady, "max_batch_size"),
    ],
)
def test_resolve_errors(
    test_repository: Path,
    model: str,
    version: str | None,
    error: type[GatewayError],
    message: str,
) -> None:
    registry = _load(test_repository)
    try:
        with pytest.raises(error) as caught:
            registry.resolve(model, version)
        assert message in caught.value.message
    finally:
        registry.close()


def test_list_policy_reports_missing_versions(tmp_path: Path) -> None:
    onnx_models.write_model(tmp_path, "m", 1, onnx_models.fixed_shape())
    onnx_models.write_config(tmp_path, "m", "[model]\nversions = [1, 5]\n")
    registry = _load(tmp_path)
    try:
        served = registry.state.models["m"]
        assert sorted(served.versions) == [1]
        assert "not in the repository" in served.failures[5]
    finally:
        registry.close()


def test_queue_limit_and_deadline(tmp_path: Path) -> None:
    onnx_models.write_model(tmp_path, "slow", 1, onnx_models.slow())
    onnx_models.write_config(
        tmp_path, "slow", "[runtime]\nintra_op_threads = 1\n[batching]\nmax_queue_size = 1\n"
    )

    async def scenario() -> list[object]:
        registry = ModelRegistry(tmp_path)
        await registry.load()
        try:
            version = registry.resolve("slow", None)
            heavy = {"x": np.ones((400, 16), np.float32)}
            light = {"x": np.ones((1, 16), np.float32)}
            running = asyncio.create_task(version.run(heavy, ["y"]))
            await asyncio.sleep(0)  # let it take the only instance
            waiting = asyncio.create_task(version.run(light, ["y"], timeout_ms=1))
            await asyncio.sleep(0)
            overflow = asyncio.create_task(version.run(light, ["y"]))
            return list(await asyncio.gather(running, waiting, overflow, return_exceptions=True))
        finally:
            registry.close()

    first, second, third = asyncio.run(scenario())
    assert isinstance(first, list) and first[0].shape == (400,)
    assert isinstance(second, DeadlineExceeded)
    assert "waited 1 ms" in second.message
    assert isinstance(third, QueueFull)
    assert "max_queue_size = 1" in third.message


def test_choose_providers_falls_back_to_cpu() -> None:
    from gateway.repository.session import choose_providers

    cpu_only = ["CPUExecutionProvider"]
    assert choose_providers(None, cpu_only) == cpu_only
    assert choose_providers(["CUDAExecutionProvider"], cpu_only) == cpu_only
    with_cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(None, with_cuda) == with_cuda
    assert choose_providers(["CPUExecutionProvider"], with_cuda) == cpu_only


def test_cuda_config_loads_on_a_cpu_only_machine(tmp_path: Path) -> None:
    onnx_models.write_model(tmp_path, "m", 1, onnx_models.fixed_shape())
    onnx_models.write_config(
        tmp_path,
        "m",
        '[runtime]\nproviders = ["CUDAExecutionProvider", "CPUExecutionProvider"]\n'
        'graph_optimization_level = "basic"\ninstances = 2\n',
    )

    async def scenario() -> None:
        async with ModelRegistry(tmp_path) as registry:
            version = registry.resolve("m", None)
            assert version.info.providers[-1] == "CPUExecutionProvider"
            assert not version.policy.batching  # no batch dimension: one request per run
            x = np.ones((2, 3), np.float32)
            (y,) = await version.run({"x": x}, ["y"])
            np.testing.assert_array_equal(y, -x)

    asyncio.run(scenario())
