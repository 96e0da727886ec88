"""SPEC 15: the v2 protocol over gRPC, driven by the real tritonclient.grpc client (and
its raw stub, for typed contents and hostile messages), against a gateway that serves
HTTP and gRPC side by side."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from gateway.config import Settings
from gateway.protocol.datatypes import NUMPY_DTYPES
from gateway.rpc.tensors import CONTENTS_FIELD
from tests.conftest import RunningGateway, metric_value, start_gateway, stop_gateway
from tests.gateway_process import free_port

TOKEN = "grpc-admin-token"
MAX_MESSAGE = 1 << 20  # --max-body-bytes: gRPC's message limit too


@pytest.fixture(scope="module")
def served(test_repository: Path) -> Iterator[tuple[RunningGateway, int]]:
    port = free_port()
    running = start_gateway(
        Settings(
            model_repository=test_repository,
            grpc_port=port,
            admin_token=TOKEN,
            max_body_bytes=MAX_MESSAGE,
        )
    )
    yield running, port
    stop_gateway(running)


@pytest.fixture(scope="module")
def client(served: tuple[RunningGateway, int]) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(f"127.0.0.1:{served[1]}") as triton:
        yield triton


@pytest.fixture(scope="module")
def stub(served: tuple[RunningGateway, int]) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{served[1]}") as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _pixels(value: float = 0.0) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("pixels", [1, 64], "FP32")
    tensor.set_data_from_numpy(np.full((1, 64), value, dtype=np.float32))
    return tensor


def _error(call: object) -> InferenceServerException:
    assert isinstance(call, InferenceServerException)
    return call


def test_health_and_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and client.is_model_ready("digits", "1")
    server = client.get_server_metadata()
    assert server.name == "gateway" and "binary_tensor_data" in server.extensions
    model = client.get_model_metadata("digits")
    assert list(model.versions) == ["1", "2"] and model.platform == "onnxruntime_onnx"
    assert (model.inputs[0].name, model.inputs[0].datatype) == ("pixels", "FP32")
    assert list(model.inputs[0].shape) == [-1, 64]


def test_infer_answers_as_the_http_path_does(
    client: grpcclient.InferenceServerClient, served: tuple[RunningGateway, int]
) -> None:
    answer = client.infer("digits", [_pixels(0.5)], model_version="1", request_id="r-7")
    over_http = httpx.post(
        f"{served[0].url}/v2/models/digits/versions/1/infer",
        json={
            "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]
        },
    ).json()
    assert answer.get_response().model_version == "1" and answer.get_response().id == "r-7"
    probabilities = answer.as_numpy("probabilities")
    assert probabilities.shape == (1, 10)
    # the same float32 values, bit for bit (JSON carries each one's shortest form)
    expected = np.array(over_http["outputs"][0]["data"], dtype=np.float32)
    assert probabilities.ravel().tobytes() == expected.tobytes()


def test_typed_contents_and_trailing_metadata(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    request = service_pb2.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="pixels", datatype="FP32", shape=[2, 64])
    tensor.contents.fp32_contents.extend([0.25] * 128)
    request.outputs.add(name="probabilities")
    response, call = stub.ModelInfer.with_call(request, metadata=(("x-request-id", "typed-1"),))
    trailers = dict(call.trailing_metadata())
    assert trailers["x-request-id"] == "typed-1"
    assert trailers["x-model-version"] == response.model_version == "2"
    assert list(response.outputs[0].shape) == [2, 10]
    values = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
    assert values.shape == (20,) and abs(values[:10].sum() - 1) < 1e-4


def test_bytes_tensors_both_ways(
    client: grpcclient.InferenceServerClient, stub: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    words = np.array([b"caf\xc3\xa9", b"", b"\x00ok"], dtype=object)
    tensor = grpcclient.InferInput("text", [3], "BYTES")
    tensor.set_data_from_numpy(words)  # raw_input_contents, length-prefixed
    assert client.infer("text", [tensor]).as_numpy("echo").tolist() == words.tolist()
    request = service_pb2.ModelInferRequest(model_name="text")
    typed = request.inputs.add(name="text", datatype="BYTES", shape=[2])
    typed.contents.bytes_contents.extend([b"a", b"bc"])
    response = stub.ModelInfer(request)
    assert response.raw_output_contents[0] == b"\x01\x00\x00\x00a\x02\x00\x00\x00bc"


def test_typed_contents_of_every_datatype_come_back_as_sent(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    values = {
        "BOOL": [True, False, True],
        "INT8": [-128, 0, 127],
        "INT16": [-32768, 1, 32767],
        "INT32": [-(2**31), 2, 2**31 - 1],
        "INT64": [-(2**63), 3, 2**63 - 1],
        "UINT8": [0, 1, 255],
        "UINT16": [0, 2, 65535],
        "UINT32": [0, 3, 2**32 - 1],
        "UINT64": [0, 4, 2**64 - 1],
        "FP32": [-1.5, 0.0, 3.25],
        "FP64": [-1e300, 0.5, 1e-300],
        "BYTES": [b"x", b"", b"yz"],
    }
    # raw: every input's bytes, FP16 included
    request = service_pb2.ModelInferRequest(model_name="types")
    for datatype, row in [*values.items(), ("FP16", [1.0, 2.0, 3.0])]:
        request.inputs.add(name=f"in_{datatype}", datatype=datatype, shape=[1, 3])
        dtype = object if datatype == "BYTES" else NUMPY_DTYPES[datatype]
        request.raw_input_contents.append(_raw(np.array(row, dtype=dtype)))
    raw_answer = stub.ModelInfer(request)
    by_name = dict(
        zip([o.name for o in raw_answer.outputs], raw_answer.raw_output_contents, strict=True)
    )
    assert np.frombuffer(by_name["out_FP16"], "<f2").tolist() == [1, 2, 3]
    # typed: FP16 has no typed field, so its typed form is refused
    typed = service_pb2.ModelInferRequest(model_name="types")
    for datatype, row in values.items():
        tensor = typed.inputs.add(name=f"in_{datatype}", datatype=datatype, shape=[1, 3])
        getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(row)
    fp16 = typed.inputs.add(name="in_FP16", datatype="FP16", shape=[1, 3])
    fp16.contents.fp32_contents.extend([1, 2, 3])
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(typed)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "FP16 travels as raw_input_contents only" in refused.value.details()
    typed.inputs.pop()
    typed.raw_input_contents.clear()
    with pytest.raises(grpc.RpcError) as missing:
        stub.ModelInfer(typed)  # in_FP16 missing: the model's own check names it
    assert "in_FP16" in missing.value.details()
    for datatype, row in values.items():
        answer = by_name[f"out_{datatype}"]
        if datatype == "BYTES":
            assert answer == _raw(np.array(row, dtype=object))
        else:
            assert np.frombuffer(answer, NUMPY_DTYPES[datatype].newbyteorder("<")).tolist() == row


def _raw(array: np.ndarray) -> bytes:
    if array.dtype == object:
        return b"".join(len(item).to_bytes(4, "little") + item for item in array.tolist())
    return array.astype(array.dtype.newbyteorder("<")).tobytes()


def test_out_of_range_typed_integers_are_refused(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    request = service_pb2.ModelInferRequest(model_name="types")
    tensor = request.inputs.add(name="in_INT8", datatype="INT8", shape=[1, 3])
    tensor.contents.int_contents.extend([1, 2, 300])
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "INT8 values must lie in [-128, 127]" in caught.value.details()


@pytest.mark.parametrize(
    ("build", "code", "message"),
    [
        (
            lambda r: setattr(r, "model_name", "nope"),
            grpc.StatusCode.NOT_FOUND,
            "unknown model 'nope'",
        ),
        (lambda r: setattr(r, "model_version", "9"), grpc.StatusCode.NOT_FOUND, "version 9"),
        (
            lambda r: r.inputs[0].ClearField("shape") or r.inputs[0].shape.extend([1, 63]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "63",
        ),
        (
            lambda r: setattr(r.inputs[0], "datatype", "FP8"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "'datatype' must be one of",
        ),
        (
            lambda r: r.raw_input_contents.append(b"x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "raw_input_contents has 2 entries for 1 inputs",
        ),
        (
            lambda r: setattr(r.inputs[0], "name", "pixelz"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "pixelz",
        ),
    ],
)
def test_errors_map_to_status_codes_with_the_http_messages(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    build: object,
    code: grpc.StatusCode,
    message: str,
) -> None:
    request = service_pb2.ModelInferRequest(model_name="digits")
    request.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(np.zeros(64, dtype="<f4").tobytes())
    build(request)  # type: ignore[operator]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() == code
    assert message in caught.value.details()


def test_the_repository_extension_needs_the_admin_token(
    client: grpcclient.InferenceServerClient,
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_repository_index()
    assert "admin token" in str(caught.value) and "UNAUTHENTICATED" in str(caught.value)
    auth = {"authorization": f"Bearer {TOKEN}"}
    rows = client.get_model_repository_index(headers=auth).models
    assert {(row.name, row.version) for row in rows} >= {("digits", "1"), ("digits", "2")}
    client.unload_model("digits", headers=auth)
    assert not client.is_model_ready("digits")
    with pytest.raises(InferenceServerException) as unloaded:
        client.infer("digits", [_pixels()])
    assert "UNAVAILABLE" in str(unloaded.value) and "unloaded" in str(unloaded.value)
    client.load_model("digits", headers=auth)
    assert client.is_model_ready("digits")


def test_metrics_count_grpc_requests(
    client: grpcclient.InferenceServerClient, served: tuple[RunningGateway, int]
) -> None:
    before = metric_value(
        httpx.get(f"{served[0].url}/metrics").text, "gateway_requests_total", protocol="grpc"
    )
    for _ in range(3):
        client.infer("digits", [_pixels()])
    after = metric_value(
        httpx.get(f"{served[0].url}/metrics").text, "gateway_requests_total", protocol="grpc"
    )
    assert after - before == 3


DATATYPES = ["FP32", "FP64", "FP16", "INT8", "INT64", "UINT8", "BOOL", "BYTES", "", "X"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    datatype=st.sampled_from(DATATYPES),
    shape=st.lists(st.integers(-3, 2**40), max_size=5),
    raw=st.lists(st.binary(max_size=300), max_size=3),
    typed=st.lists(st.floats(allow_nan=True), max_size=70),
    name=st.sampled_from(["pixels", "", "other"]),
)
def test_hostile_tensors_never_get_an_internal_error(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    datatype: str,
    shape: list[int],
    raw: list[bytes],
    typed: list[float],
    name: str,
) -> None:
    request = service_pb2.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name=name, datatype=datatype)
    tensor.shape.extend(shape)
    if raw:
        request.raw_input_contents.extend(raw)
    else:
        tensor.contents.fp32_contents.extend(typed)
    try:
        stub.ModelInfer(request, timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), exc.details()


@pytest.mark.parametrize("kind", ["string_param", "double_param", "bool_param"])
def test_a_timeout_that_is_not_a_number_of_milliseconds_is_refused(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, kind: str
) -> None:
    request = service_pb2.ModelInferRequest(model_name="digits")
    request.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(np.zeros(64, dtype="<f4").tobytes())
    value = {"string_param": "soon", "double_param": -5.0, "bool_param": True}[kind]
    setattr(request.parameters["timeout_ms"], kind, value)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'timeout_ms' must be a non-negative number of milliseconds" in caught.value.details()
    request.parameters["timeout_ms"].int64_param = 5000
    assert stub.ModelInfer(request).model_name == "digits"


def test_weights_and_a_sticky_key_from_metadata_route_grpc_as_http(
    served: tuple[RunningGateway, int], stub: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    url, auth = served[0].url, {"authorization": f"Bearer {TOKEN}"}
    routing = {"weights": {"1": 50, "2": 50}, "sticky_key": "x-user-id"}
    put = httpx.put(f"{url}/admin/models/digits/routing", json=routing, headers=auth)
    assert put.status_code == 200, put.text
    try:
        request = service_pb2.ModelInferRequest(model_name="digits")
        request.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
        request.raw_input_contents.append(np.zeros(64, dtype="<f4").tobytes())
        seen: dict[str, set[str]] = {}
        for user in [f"user-{n}" for n in range(12)] * 3:
            answer = stub.ModelInfer(request, metadata=(("x-user-id", user),))
            seen.setdefault(user, set()).add(answer.model_version)
        assert all(len(versions) == 1 for versions in seen.values())  # sticky
        assert set().union(*seen.values()) == {"1", "2"}  # and split
    finally:
        httpx.delete(f"{url}/admin/models/digits/routing", headers=auth).raise_for_status()


def test_the_asyncio_client(served: tuple[RunningGateway, int]) -> None:
    import asyncio

    import tritonclient.grpc.aio as aioclient

    async def run() -> list[str]:
        client = aioclient.InferenceServerClient(f"127.0.0.1:{served[1]}")
        try:
            assert await client.is_server_ready()
            pixels = aioclient.InferInput("pixels", [1, 64], "FP32")
            pixels.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
            answers = await asyncio.gather(
                *[client.infer("digits", [pixels], model_version="1") for _ in range(16)]
            )
            return [answer.get_response().model_version for answer in answers]
        finally:
            await client.close()

    assert asyncio.run(run()) == ["1"] * 16


def test_a_message_over_the_body_limit_is_refused_before_it_is_decoded(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    request = service_pb2.ModelInferRequest(model_name="digits")
    request.inputs.add(name="pixels", datatype="FP32", shape=[4096, 64])
    request.raw_input_contents.append(bytes(4 * 4096 * 64))  # 1 MiB of data and more
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    small = service_pb2.ModelInferRequest(model_name="digits")
    small.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
    small.raw_input_contents.append(bytes(4 * 64))
    assert stub.ModelInfer(small).model_name == "digits"  # the server is unharmed
