"""Tensor data conversion for every datatype, JSON and binary, both directions."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from gateway.errors import InvalidRequest
from gateway.protocol.datatypes import DATATYPES, NUMPY_DTYPES, datatype_of
from gateway.protocol.tensors import (
    array_from_bytes,
    array_from_json,
    json_data,
    parse_shape,
    to_bytes,
)

SAMPLES: dict[str, list[object]] = {
    "BOOL": [True, False, True, True, False, False],
    "INT8": [-128, -1, 0, 1, 2, 127],
    "INT16": [-32768, -2, 0, 3, 4, 32767],
    "INT32": [-(2**31), -5, 0, 6, 7, 2**31 - 1],
    "INT64": [-(2**63), -9, 0, 10, 11, 2**63 - 1],
    "UINT8": [0, 1, 2, 3, 254, 255],
    "UINT16": [0, 1, 2, 3, 4, 65535],
    "UINT32": [0, 1, 2, 3, 4, 2**32 - 1],
    "UINT64": [0, 1, 2, 3, 4, 2**64 - 1],
    "FP16": [0.5, -1.5, 0.0, 2.0, 65504.0, -0.25],
    "FP32": [0.1, -2.5, 0.0, 3.25, 1e30, -1e-30],
    "FP64": [0.1, -2.5, 0.0, 3.25, 1e300, -1e-300],
    "BYTES": ["a", "", "héllo", "x" * 40, "0", "last"],
}


@pytest.mark.parametrize("datatype", DATATYPES)
def test_json_round_trip(datatype: str) -> None:
    values = SAMPLES[datatype]
    array = array_from_json("x", datatype, (2, 3), values)
    assert array.shape == (2, 3)
    assert datatype_of(array) == datatype
    back = orjson.loads(orjson.dumps(json_data(array), option=orjson.OPT_SERIALIZE_NUMPY))
    if datatype in ("FP16", "FP32"):
        np.testing.assert_allclose(back, np.asarray(values, dtype=NUMPY_DTYPES[datatype]))
    else:
        assert back == values


@pytest.mark.parametrize("datatype", DATATYPES)
def test_binary_round_trip(datatype: str) -> None:
    array = array_from_json("x", datatype, (3, 2), SAMPLES[datatype])
    raw = to_bytes(array)
    back = array_from_bytes("x", datatype, (3, 2), memoryview(raw))
    assert back.shape == (3, 2)
    assert datatype_of(back) == datatype
    np.testing.assert_array_equal(back, array)


def test_binary_layout_is_little_endian_row_major() -> None:
    array = np.array([[1, 2], [3, 4]], dtype=np.int32)
    assert to_bytes(array) == struct.pack("<4i", 1, 2, 3, 4)
    strings = np.array([b"ab", b""], dtype=object)
    assert to_bytes(strings) == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0)


def test_nested_json_data_is_accepted_row_major() -> None:
    array = array_from_json("x", "INT32", (2, 2), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(array, [[1, 2], [3, 4]])


def test_bytes_json_output_is_text() -> None:
    array = np.array(["a", b"b\xff"], dtype=object)
    assert json_data(array) == ["a", "b\ufffd"]


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("FP32", [1.0, 2.0], "shape [1, 3] holds 3 elements, but 'data' has 2"),
        ("INT32", [1.5, 2, 3], "expected INT32 values, got floating-point numbers"),
        ("BOOL", [1, 0, 1], "expected BOOL values, got integers"),
        ("FP32", ["a", "b", "c"], "expected FP32 values, got strings"),
        ("FP32", [1, None, 3], "expected FP32 values, got mixed or non-numeric values"),
        ("INT8", [1, 2, 300], "INT8 values must lie in [-128, 127], got values in [1, 300]"),
        ("UINT8", [-1, 2, 3], "UINT8 values must lie in [0, 255]"),
        ("FP32", [[1, 2], [3]], "flat or evenly nested list"),
        ("BYTES", ["a", 1, "c"], "BYTES data must be strings, got int"),
        ("BYTES", ["a"], "holds 3 elements, but 'data' has 1"),
    ],
)
def test_json_errors_say_expected_and_got(datatype: str, data: object, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        array_from_json("x", datatype, (1, 3), data)
    assert message in caught.value.message
    assert "input 'x'" in caught.value.message


@pytest.mark.parametrize("shape", [None, "1,2", [1, -1], [1.0], [True], {"a": 1}, [2**63]])
def test_shape_must_be_integers_from_0_below_2_63(shape: object) -> None:
    with pytest.raises(InvalidRequest, match=r"in \[0, 2\^63\)"):
        parse_shape("x", shape)


def test_binary_size_mismatch() -> None:
    with pytest.raises(InvalidRequest, match="needs 12 bytes of binary data, got 8"):
        array_from_bytes("x", "FP32", (1, 3), memoryview(b"\0" * 8))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x00", "ends inside a 4-byte length prefix"),
        (struct.pack("<I", 10) + b"abc", "runs past the end"),
    ],
)
def test_binary_bytes_framing_errors(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        array_from_bytes("x", "BYTES", (1,), memoryview(raw))


def test_binary_bytes_count_mismatch() -> None:
    raw = struct.pack("<I", 1) + b"a"
    with pytest.raises(InvalidRequest, match="holds 2 elements, but 'data' has 1"):
        array_from_bytes("x", "BYTES", (2,), memoryview(raw))


def test_empty_tensor() -> None:
    array = array_from_json("x", "FP32", (0, 3), [])
    assert array.shape == (0, 3) and array.dtype == np.float32


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
@pytest.mark.parametrize(
    "data",
    [
        [0.1, -2.5, 3e38, 1e-45],
        [1, 2, 3, -4],  # integers into a float tensor
        [True, False, 2.5, 1],  # JSON booleans count as 1 and 0, as numpy reads them
        [2**63, -(2**63), 2**64 + 1, 0.5],  # beyond int64: as floats
        [1e308, -1e308, 1.7976931348623157e308, 0.0],  # beyond FP32 or FP16: +-inf
    ],
)
def test_flat_float_data_converts_as_numpy_does(datatype: str, data: list[object]) -> None:
    """The flat-list fast path gives what numpy's general conversion gives (overflow to
    +-inf is quiet in the server: quiet_float_casts)."""
    with np.errstate(over="ignore"):
        got = array_from_json("x", datatype, (1, 4), data)
        expected = np.asarray(data, dtype=np.float64).astype(NUMPY_DTYPES[datatype])
    expected = expected.reshape(1, 4)
    assert got.dtype == NUMPY_DTYPES[datatype] and got.shape == (1, 4)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (["1.5", 2.0, 3.0], "expected FP32 values, got strings"),
        ([1.0, None, 3.0], "expected FP32 values, got mixed or non-numeric values"),
        ([1.0, [2.0], 3.0], "flat or evenly nested list"),
        ([1.0, {"a": 1}, 3.0], "expected FP32 values, got mixed or non-numeric values"),
        ([1.0, 2**1100, 3.0], "FP32"),
    ],
)
def test_flat_float_data_with_anything_but_numbers_is_refused(
    data: list[object], message: str
) -> None:
    """Numeric strings, which numpy would parse, are refused like any other string."""
    with pytest.raises(InvalidRequest) as caught:
        array_from_json("x", "FP32", (1, 3), data)
    assert message in caught.value.message


def test_flat_float_data_keeps_the_non_finite_words() -> None:
    got = array_from_json("x", "FP32", (1, 3), ["NaN", "Infinity", "-Infinity"])
    assert np.isnan(got[0, 0]) and got[0, 1] == np.inf and got[0, 2] == -np.inf
