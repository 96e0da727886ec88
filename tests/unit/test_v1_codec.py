"""TF-Serving :predict bodies: row and columnar formats."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from gateway.errors import InvalidRequest
from gateway.protocol.signature import Signature, TensorSpec
from gateway.protocol.v1 import decode_predict, encode_predict

ONE = Signature(inputs=(TensorSpec("x", "FP32", (-1, 2)),), outputs=())
TWO = Signature(
    inputs=(TensorSpec("a", "FP32", (-1, 2)), TensorSpec("s", "BYTES", (-1,))), outputs=()
)


def test_bare_rows_for_single_input_model() -> None:
    request = decode_predict(b'{"instances": [[1, 2], [3, 4]]}', ONE)
    assert request.row_format
    assert request.inputs["x"].dtype == np.float32
    np.testing.assert_array_equal(request.inputs["x"], [[1, 2], [3, 4]])


def test_object_rows_and_b64() -> None:
    body = b'{"instances": [{"a": [1, 2], "s": "hi"}, {"a": [3, 4], "s": {"b64": "AAE="}}]}'
    request = decode_predict(body, TWO)
    np.testing.assert_array_equal(request.inputs["a"], [[1, 2], [3, 4]])
    assert request.inputs["s"].tolist() == [b"hi", b"\x00\x01"]


def test_columnar_inputs() -> None:
    request = decode_predict(b'{"inputs": {"a": [[1, 2]], "s": ["x"]}}', TWO)
    assert not request.row_format
    assert request.inputs["s"].tolist() == [b"x"]
    bare = decode_predict(b'{"inputs": [[5, 6]], "signature_name": "serving_default"}', ONE)
    np.testing.assert_array_equal(bare.inputs["x"], [[5, 6]])


@pytest.mark.parametrize(
    ("body", "signature", "message"),
    [
        (b"nope", ONE, "not valid JSON"),
        (b"[]", ONE, 'JSON object with "instances" or "inputs"'),
        (b'{"rows": []}', ONE, "unknown key(s) 'rows'"),
        (b'{"instances": [], "inputs": []}', ONE, 'exactly one of "instances" or "inputs"'),
        (b'{"instances": []}', ONE, "non-empty list of rows"),
        (b'{"instances": [[1, 2], [3]]}', ONE, "evenly nested"),
        (b'{"instances": [["a", "b"]]}', ONE, "expected FP32 values, got strings"),
        (b'{"instances": [[1, 2]]}', TWO, "each instance must be an object naming them"),
        (b'{"instances": [{"a": [1, 2]}]}', TWO, "instances[0]: missing input 's'"),
        (b'{"instances": [{"a": [1, 2], "s": "x", "q": 1}]}', TWO, "unknown input(s) 'q'"),
        (b'{"instances": [{"a": [1, 2], "s": 5}]}', TWO, "BYTES values must be strings"),
        (b'{"instances": [{"a": [1, 2], "s": {"b64": "!!"}}]}', TWO, "invalid base64"),
        (b'{"inputs": {"a": [[1, 2]]}}', TWO, "missing input(s) 's'"),
        (b'{"inputs": [[1, 2]]}', TWO, '"inputs" must be an object naming them'),
    ],
)
def test_errors(body: bytes, signature: Signature, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_predict(body, signature)
    assert message in caught.value.message


def test_encode_predictions() -> None:
    probs = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    labels = np.array([1, 0], dtype=np.int64)
    assert orjson.loads(encode_predict([("p", probs)], True)) == {
        "predictions": [[0.25, 0.75], [0.5, 0.5]]
    }
    assert orjson.loads(encode_predict([("p", probs), ("l", labels)], True)) == {
        "predictions": [{"p": [0.25, 0.75], "l": 1}, {"p": [0.5, 0.5], "l": 0}]
    }
    assert orjson.loads(encode_predict([("p", probs), ("l", labels)], False)) == {
        "outputs": {"p": [[0.25, 0.75], [0.5, 0.5]], "l": [1, 0]}
    }
    words = np.array([b"a", b"b"], dtype=object)
    assert orjson.loads(encode_predict([("w", words)], False)) == {"outputs": ["a", "b"]}


def test_row_format_needs_a_shared_batch_dimension() -> None:
    outputs = [("p", np.zeros((2, 2), np.float32)), ("q", np.zeros((3,), np.float32))]
    with pytest.raises(InvalidRequest, match="do not share a batch dimension"):
        encode_predict(outputs, True)
