"""Execution providers: a warning when [runtime] providers asks for CUDA and the model runs
without it, and when onnxruntime and onnxruntime-gpu are installed side by side."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import onnxruntime as ort
import pytest

from gateway.packages import installed_runtimes, runtime_clash
from gateway.repository.session import CUDA, OnnxModel, provider_shortfall
from gateway.repository.spec import RuntimeSection
from tests import onnx_models

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    return onnx_models.write_model(tmp_path, "pair", 1, onnx_models.scaled_sum(1.0))


def test_asking_for_cuda_without_it_warns(
    model_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the warning is for one without it")
    runtime = RuntimeSection(providers=[CUDA, "CPUExecutionProvider"])
    with caplog.at_level(logging.WARNING, logger="gateway.runtime"):
        model = OnnxModel(model_file, runtime)
    assert model.providers == ["CPUExecutionProvider"]  # it still loads, on CPU
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    (message,) = warnings
    assert str(model_file) in message
    assert "[runtime] providers asks for CUDAExecutionProvider" in message
    assert "runs on CPUExecutionProvider" in message
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in message


def test_no_warning_unless_cuda_was_asked_for(
    model_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.runtime"):
        OnnxModel(model_file, RuntimeSection())  # CUDA if there, else CPU: as asked
        OnnxModel(model_file, RuntimeSection(providers=["CPUExecutionProvider"]))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_cuda_build_whose_cuda_does_not_start_is_told_apart() -> None:
    cpu = "CPUExecutionProvider"
    message = provider_shortfall([CUDA], [cpu], [CUDA, cpu])
    assert message is not None and "did not start" in message and "no GPU visible" in message
    assert provider_shortfall([CUDA, cpu], [CUDA, cpu], [CUDA, cpu]) is None
    assert provider_shortfall(None, [cpu], [cpu]) is None


def test_two_onnxruntimes_in_one_environment_are_named_with_the_fix() -> None:
    assert runtime_clash({"onnxruntime": "1.20.0"}) is None
    message = runtime_clash({"onnxruntime": "1.20.0", "onnxruntime-gpu": "1.20.0"})
    assert message is not None
    assert "onnxruntime 1.20.0 and onnxruntime-gpu 1.20.0 are both installed" in message
    assert "pip install 'onnxruntime-gpu>=1.17'" in message
    assert "onnxruntime" in installed_runtimes()  # this environment's, by its metadata


def test_the_gpu_extra_names_onnxruntime_gpu() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["gpu"] == ["onnxruntime-gpu>=1.17"]
    assert any(d.startswith("onnxruntime>=") for d in project["dependencies"])
