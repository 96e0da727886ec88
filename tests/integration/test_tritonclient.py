"""The real tritonclient.http against the v2 endpoints, binary data on and off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from gateway.protocol.datatypes import DATATYPES
from tests.conftest import RunningGateway
from tests.integration.test_inference import _all_types_inputs

pytestmark = pytest.mark.integration

PIXELS = np.random.default_rng(5).integers(0, 17, size=(3, 64)).astype(np.float32)


@pytest.fixture
def triton_client(gateway: RunningGateway) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=gateway.authority, network_timeout=30)
    yield client
    client.close()


def test_server_and_model_status(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready("digits")
    assert triton_client.is_model_ready("digits", "1")
    assert not triton_client.is_model_ready("broken")
    metadata = triton_client.get_model_metadata("digits")
    assert metadata["inputs"][0]["name"] == "pixels"
    assert triton_client.get_model_metadata("digits", "1")["versions"] == ["1"]
    # a model with [features]: its entity input under parameters, beside its own inputs
    fraud = triton_client.get_model_metadata("fraud")
    assert [i["name"] for i in fraud["inputs"]] == ["features"]
    assert fraud["parameters"]["features"]["entity_input"]["name"] == "user_id"
    assert triton_client.get_server_metadata()["name"] == "gateway"


@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_digits(
    triton_client: triton.InferenceServerClient,
    test_repository: Path,
    binary_in: bool,
    binary_out: bool,
) -> None:
    pixels = triton.InferInput("pixels", list(PIXELS.shape), "FP32")
    pixels.set_data_from_numpy(PIXELS, binary_data=binary_in)
    wanted = triton.InferRequestedOutput("probabilities", binary_data=binary_out)
    result = triton_client.infer(
        "digits", [pixels], model_version="1", outputs=[wanted], request_id="t-1"
    )
    session = ort.InferenceSession(str(test_repository / "digits" / "1" / "model.onnx"))
    expected = session.run(None, {"pixels": PIXELS})[0]
    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected)
    response = result.get_response()
    assert response["model_version"] == "1" and response["id"] == "t-1"


@pytest.mark.parametrize("binary", [False, True])
def test_every_datatype(triton_client: triton.InferenceServerClient, binary: bool) -> None:
    arrays = _all_types_inputs([1, 0])
    inputs, outputs = [], []
    for name, array in arrays.items():
        datatype = name.removeprefix("in_")
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
        outputs.append(triton.InferRequestedOutput(f"out_{datatype}", binary_data=binary))
    result = triton_client.infer("types", inputs, outputs=outputs)
    for datatype in DATATYPES:
        got = result.as_numpy(f"out_{datatype}")
        sent = arrays[f"in_{datatype}"]
        assert got.shape == sent.shape, datatype
        if datatype == "BYTES":
            assert [g if isinstance(g, bytes) else g.encode() for g in got.ravel()] == list(
                sent.ravel()
            )
        else:
            np.testing.assert_array_equal(got.astype(sent.dtype), sent, err_msg=datatype)


def test_errors_reach_the_client(triton_client: triton.InferenceServerClient) -> None:
    wrong = triton.InferInput("pixels", [1, 63], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 63), np.float32))
    with pytest.raises(InferenceServerException, match=r"expected shape \[-1, 64\]"):
        triton_client.infer("digits", [wrong])
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        triton_client.infer("nope", [wrong])
