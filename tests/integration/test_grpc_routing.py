"""SPEC 15's "same shadowing and features as HTTP", over gRPC: a shadowed model's
requests are copied to its shadow version and compared, and a model with [features]
looks its rows up by entity id, with the answers HTTP gives for the same request."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway.config import Settings
from tests import onnx_models
from tests.conftest import (
    EXAMPLES,
    RunningGateway,
    metric_value,
    start_gateway,
    stop_gateway,
    wait_for_metric,
)
from tests.gateway_process import free_port

pytestmark = pytest.mark.integration

A_ROW = [1.0, 5.0, 2.0, 3.0]
B_ROW = [0, 1, 0, 0]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, int, Path]]:
    """fraud (features from entities.csv) and mirror (v1 answers, v2 shadows it, with
    twice its sums); the gateway, its gRPC port and its shadow log."""
    root = tmp_path_factory.mktemp("grpc-routing")
    shutil.copytree(EXAMPLES / "fraud", root / "fraud")
    onnx_models.write_model(root, "mirror", 1, onnx_models.scaled_sum(1.0))
    onnx_models.write_model(root, "mirror", 2, onnx_models.scaled_sum(2.0))
    onnx_models.write_config(
        root,
        "mirror",
        '[model]\nversions = "all"\n[routing]\nweights = { "1" = 1 }\n'
        "[routing.shadow]\nversion = 2\n",
    )
    port = free_port()
    log = root.parent / "shadow.jsonl"
    running = start_gateway(
        Settings(
            model_repository=root,
            grpc_port=port,
            features_file=EXAMPLES / "fraud" / "entities.csv",
            shadow_log=log,
        )
    )
    yield running, port, log
    stop_gateway(running)


@pytest.fixture(scope="module")
def stub(
    served: tuple[RunningGateway, int, Path],
) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{served[1]}") as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _mirror_request() -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="mirror")
    request.inputs.add(name="a", datatype="FP32", shape=[1, 4])
    request.inputs.add(name="b", datatype="INT64", shape=[1, 4])
    request.raw_input_contents.extend(
        [np.array([A_ROW], "<f4").tobytes(), np.array([B_ROW], "<i8").tobytes()]
    )
    return request


def test_grpc_requests_are_shadowed_and_compared_after_the_answer(
    served: tuple[RunningGateway, int, Path],
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    running, _, log = served
    for index in range(12):
        response, call = stub.ModelInfer.with_call(
            _mirror_request(), metadata=(("x-request-id", f"g-{index}"),), timeout=10
        )
        trailers = dict(call.trailing_metadata())
        assert trailers["x-model-version"] == "1"  # the shadow never answers
        sums = np.frombuffer(response.raw_output_contents[0], "<f4")
        assert sums.tolist() == [1.0, 6.0, 2.0, 3.0]
    labels = {"model": "mirror", "primary": "1", "shadow": "2"}
    text = wait_for_metric(running.url, "gateway_shadow_requests_total", 12, **labels)
    assert metric_value(text, "gateway_shadow_errors_total", **labels) == 0
    # twice the sums: the same argmax in every row, 6.0 apart at most
    assert metric_value(text, "gateway_shadow_disagreements_total", **labels) == 0
    assert metric_value(text, "gateway_shadow_abs_diff_count", **labels) == 12
    assert metric_value(text, "gateway_shadow_abs_diff_sum", **labels) == 12 * 6.0
    entries = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    logged = {e["request_id"]: e for e in entries if e["request_id"].startswith("g-")}
    assert len(logged) == 12
    entry = logged["g-3"]
    assert (entry["primary_version"], entry["shadow_version"]) == ("1", "2")
    assert entry["primary"]["sum"] == [1.0, 6.0, 2.0, 3.0]
    assert entry["shadow"]["sum"] == [2.0, 12.0, 4.0, 6.0]


def test_features_by_entity_id_over_grpc_answer_as_http_does(
    served: tuple[RunningGateway, int, Path],
) -> None:
    running, port, _ = served
    ids = ["u0001", "u0002", "nobody"]  # the last is unknown: it gets the defaults
    user_ids = grpcclient.InferInput("user_id", [len(ids)], "BYTES")
    user_ids.set_data_from_numpy(np.array(ids, dtype=np.object_))
    with grpcclient.InferenceServerClient(f"127.0.0.1:{port}") as triton:
        result = triton.infer("fraud", [user_ids])
    over_grpc = {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}
    body = {"inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [3], "data": ids}]}
    answer = httpx.post(f"{running.url}/v2/models/fraud/infer", json=body, timeout=10)
    assert answer.status_code == 200 and answer.headers["x-feature-defaults"] == "1"
    over_http = {o["name"]: o for o in answer.json()["outputs"]}
    assert set(over_grpc) == set(over_http)
    for name, array in over_grpc.items():
        assert array.shape[0] == 3
        expected = np.array(over_http[name]["data"], dtype=array.dtype).reshape(array.shape)
        assert np.array_equal(array, expected), name


def test_grpc_answers_say_how_many_rows_got_the_feature_defaults(
    served: tuple[RunningGateway, int, Path],
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    request = service_pb2.ModelInferRequest(model_name="fraud")
    tensor = request.inputs.add(name="user_id", datatype="BYTES", shape=[2])
    tensor.contents.bytes_contents.extend([b"nobody", b"u0001"])
    _, call = stub.ModelInfer.with_call(request, timeout=10)
    assert dict(call.trailing_metadata())["x-feature-defaults"] == "1"
    mirror, call = stub.ModelInfer.with_call(_mirror_request(), timeout=10)
    assert "x-feature-defaults" not in dict(call.trailing_metadata())  # no ids looked up
