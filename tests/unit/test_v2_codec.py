"""OIP v2 request decoding and response encoding, JSON and binary."""

from __future__ import annotations

import struct
from collections.abc import Mapping

import numpy as np
import orjson
import pytest

from gateway.errors import InvalidRequest
from gateway.protocol.v2 import decode_request, encode_response


def _binary_body(header: Mapping[str, object], *chunks: bytes) -> tuple[bytes, str]:
    head = orjson.dumps(header)
    return head + b"".join(chunks), str(len(head))


def test_json_request() -> None:
    body = orjson.dumps(
        {
            "id": "r1",
            "parameters": {"binary_data_output": True, "timeout_ms": 50},
            "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}],
            "outputs": [{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
        }
    )
    request = decode_request(body, None)
    assert request.id == "r1"
    assert request.binary_output is True
    assert request.timeout_ms == 50.0
    assert request.datatypes == {"x": "FP32"}
    np.testing.assert_array_equal(request.inputs["x"], [[1, 2], [3, 4]])
    assert [(o.name, o.binary) for o in request.outputs or []] == [("y", False), ("z", None)]


def test_binary_request_with_mixed_inputs() -> None:
    floats = np.arange(4, dtype=np.float32).tobytes()
    strings = struct.pack("<I", 2) + b"hi"
    body, length = _binary_body(
        {
            "inputs": [
                {
                    "name": "a",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(floats)},
                },
                {"name": "j", "shape": [1], "datatype": "INT64", "data": [7]},
                {
                    "name": "s",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(strings)},
                },
            ]
        },
        floats,
        strings,
    )
    request = decode_request(body, length)
    np.testing.assert_array_equal(request.inputs["a"], [[0, 1, 2, 3]])
    assert request.inputs["j"].tolist() == [7]
    assert request.inputs["s"].tolist() == [b"hi"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "request body is not valid JSON"),
        (b"[1, 2]", "must be a JSON object with 'inputs', got list"),
        (b"{}", "'inputs' must be a non-empty list of tensors"),
        (b'{"inputs": []}', "'inputs' must be a non-empty list"),
        (b'{"inputs": [3]}', "inputs[0] must be an object, got int"),
        (b'{"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}', "needs a string 'name'"),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP8", "data": [1]}]}',
            "'datatype' must be one of BOOL, INT8",
        ),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', "neither 'data' nor"),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},'
            b'{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}',
            "input 'x' is given more than once",
        ),
        (
            b'{"id": 5, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}',
            "'id' must be a string, got int",
        ),
        (
            b'{"parameters": {"binary_data_output": "yes"}, '
            b'"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}',
            "'binary_data_output' must be true or false, got 'yes'",
        ),
        (
            b'{"parameters": {"timeout_ms": -1}, '
            b'"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}',
            "'timeout_ms' must be a non-negative number",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", '
            b'"parameters": {"binary_data_size": 4}}]}',
            "no Inference-Header-Content-Length header",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], '
            b'"outputs": [{"name": "y", "parameters": {"classification": 3}}]}',
            "classification extension is not supported",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], '
            b'"outputs": {"name": "y"}}',
            "'outputs' must be a list",
        ),
    ],
)
def test_malformed_requests(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_request(body, None)
    assert message in caught.value.message


@pytest.mark.parametrize("length", ["-1", "abc", "999999"])
def test_header_length_must_fit_the_body(length: str) -> None:
    with pytest.raises(InvalidRequest, match="Inference-Header-Content-Length must be"):
        decode_request(b'{"inputs": []}', length)


def test_binary_sizes_must_add_up() -> None:
    header = {
        "inputs": [
            {"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}
        ]
    }
    body, length = _binary_body(header, b"\0" * 8)
    with pytest.raises(InvalidRequest, match="is 8 bytes, but the inputs' binary_data_size"):
        decode_request(body, length)
    body, length = _binary_body(header, b"\0" * 2)
    with pytest.raises(InvalidRequest, match="runs past the end of the body"):
        decode_request(body, length)


def test_encode_json_response() -> None:
    payload, length = encode_response(
        "m", "3", "abc", [("y", np.array([[1.5, 2.5]], dtype=np.float32))], [False]
    )
    assert length is None
    assert orjson.loads(payload) == {
        "model_name": "m",
        "model_version": "3",
        "id": "abc",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.5]}],
    }


def test_encode_mixed_binary_response() -> None:
    y = np.array([[1, 2]], dtype=np.int64)
    z = np.array([b"ok"], dtype=object)
    w = np.array([True])
    payload, length = encode_response(
        "m", "1", None, [("y", y), ("z", z), ("w", w)], [True, False, True]
    )
    assert length is not None
    header = orjson.loads(payload[:length])
    assert "id" not in header
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert header["outputs"][1]["data"] == ["ok"]
    assert header["outputs"][2]["parameters"] == {"binary_data_size": 1}
    assert payload[length:] == y.tobytes() + b"\x01"
