"""The gRPC side of the load tests: ``loadtests/grpc_load.py`` drives a real gateway and
counts what it got, and ``loadtests/protocols.py`` sends the same row through REST
JSON, REST binary and gRPC."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from gateway.config import Settings
from gateway.rpc.messages import ModelInferRequest
from loadtests.protocols import write_requests
from loadtests.reference_models import write_repository
from tests.conftest import ROOT, RunningGateway, metric_value, start_gateway, stop_gateway
from tests.gateway_process import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, int]]:
    """The benchmark's own models (mlp, wide), served over HTTP and gRPC."""
    root = write_repository(tmp_path_factory.mktemp("bench-models"), 32, 2.0)
    port = free_port()
    running = start_gateway(Settings(model_repository=root, grpc_port=port))
    yield running, port
    stop_gateway(running)


def _grpc_load(port: int, request: Path, *options: str) -> dict[str, object]:
    command = [sys.executable, str(ROOT / "loadtests" / "grpc_load.py"), f"127.0.0.1:{port}"]
    command += [str(request), "--duration", "1", *options]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    line = next(x for x in result.stdout.splitlines() if x.startswith("GRPC_JSON "))
    return dict(json.loads(line.removeprefix("GRPC_JSON ")))


def _answered_over_grpc(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return metric_value(text, "gateway_requests_total", model="mlp", protocol="grpc", code="200")


def test_the_four_transports_carry_the_same_row(tmp_path: Path) -> None:
    requests = write_requests(tmp_path, ["mlp"])["mlp"]
    as_json = json.loads(requests.json.read_bytes())["inputs"][0]
    row = np.array(as_json["data"], dtype=np.float32)
    assert as_json["shape"] == [1, 64] and row.shape == (64,)
    binary = requests.binary.read_bytes()
    header = json.loads(binary[: requests.binary_header_length])
    assert header["parameters"] == {"binary_data_output": True}
    assert np.array_equal(np.frombuffer(binary[requests.binary_header_length :], "<f4"), row)
    message = ModelInferRequest.FromString(requests.grpc.read_bytes())
    assert message.model_name == "mlp" and list(message.inputs[0].shape) == [1, 64]
    assert np.array_equal(np.frombuffer(message.raw_input_contents[0], "<f4"), row)
    instances = json.loads(requests.v1.read_bytes())["instances"]
    assert np.array_equal(np.array(instances, dtype=np.float32), row[None, :])


def test_grpc_load_drives_the_gateway_and_counts_its_answers(
    served: tuple[RunningGateway, int], tmp_path: Path
) -> None:
    running, port = served
    requests = write_requests(tmp_path, ["mlp"])["mlp"]
    before = _answered_over_grpc(running.url)
    summary = _grpc_load(port, requests.grpc, "--concurrency", "8", "--channels", "2")
    answered = int(summary["requests"])  # type: ignore[call-overload]
    assert answered > 0 and summary["errors"] == 0
    assert 0 < summary["p50"] <= summary["p99"] <= summary["max"]  # type: ignore[operator]
    # counted by the gateway too, with one warm-up call per channel
    assert _answered_over_grpc(running.url) - before == answered + 2


def test_grpc_load_stops_at_once_on_a_request_the_gateway_refuses(
    served: tuple[RunningGateway, int], tmp_path: Path
) -> None:
    wrong = ModelInferRequest(model_name="mlp")
    wrong.inputs.add(name="input", datatype="FP32", shape=[1, 3])  # mlp takes 64 columns
    wrong.raw_input_contents.append(np.zeros(3, "<f4").tobytes())
    path = tmp_path / "wrong-shape.grpc"
    path.write_bytes(wrong.SerializeToString())
    command = [sys.executable, str(ROOT / "loadtests" / "grpc_load.py")]
    command += [f"127.0.0.1:{served[1]}", str(path), "--duration", "30"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "GRPC_JSON" not in result.stdout
    assert "the gateway refused the request: INVALID_ARGUMENT" in result.stderr
    assert "[1, 3]" in result.stderr  # the gateway's own message says what was wrong
