"""The pure parts of refusing hostile values: shapes, nesting, huge numbers in messages,
non-finite floats, model names, control characters in text logs."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import orjson
import pytest

from gateway.errors import InvalidRequest
from gateway.logs import TEXT_FORMAT, TextFormatter, escape_controls
from gateway.protocol import v1, v2
from gateway.protocol.jsonbody import load_object
from gateway.protocol.signature import Signature, TensorSpec, check_shape, format_shape
from gateway.protocol.tensors import (
    MAX_DIMS,
    array_from_bytes,
    array_from_json,
    check_nesting,
    json_data,
    parse_shape,
)
from gateway.repository.layout import is_valid_model_name


def _refused(call: object, *phrases: str) -> str:
    assert callable(call)
    with pytest.raises(InvalidRequest) as caught:
        call()
    message = caught.value.message
    assert len(message) < 300, message
    for phrase in phrases:
        assert phrase in message, message
    return message


def test_a_shape_of_32_dimensions_below_2_63_is_accepted() -> None:
    shape = [0, *[2**63 - 1] * (MAX_DIMS - 1)]
    assert parse_shape("x", shape) == tuple(shape)
    assert parse_shape("x", []) == ()


def test_too_many_dimensions_are_refused_before_looking_at_them() -> None:
    """Refused on the length alone: 10 million dimensions cost no more than 3."""
    shape = ["not even a number"] * 10_000_000
    started = time.perf_counter()
    _refused(lambda: parse_shape("x", shape), "at most 32 dimensions", "got 10000000")
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("dimension", "shown"),
    [(-1, "got -1"), (2**63, "got about 2^63"), (10**5000, "about 2^16609"), (1.5, "got 1.5")],
    ids=["negative", "2^63", "5000-digits", "float"],
)
def test_a_dimension_outside_0_to_2_63_is_refused_with_a_short_message(
    dimension: object, shown: str
) -> None:
    _refused(lambda: parse_shape("x", [1, dimension]), "[0, 2^63)", shown)


def test_a_deeply_nested_shape_is_shown_without_recursion() -> None:
    deep: object = 1
    for _ in range(100_000):
        deep = [deep]
    _refused(lambda: parse_shape("x", deep), "must be an integer", "[[[...]]]")
    _refused(lambda: parse_shape("x", [deep]), "[0, 2^63)", "[[[...]]]")


def test_an_empty_tensor_whose_other_dimensions_are_too_big_is_refused() -> None:
    for datatype in ("FP32", "BYTES", "INT16"):
        _refused(
            lambda d=datatype: array_from_json("x", d, (0, 2**63 - 1), []),
            "holds no elements",
            "2^63 bytes",
        )
    _refused(
        lambda: array_from_bytes("x", "INT64", (2**62, 0), memoryview(b"")),
        "holds no elements",
    )
    assert array_from_json("x", "UINT8", (0, 2**63 - 1), []).shape == (0, 2**63 - 1)


def test_a_huge_element_count_is_summarised_in_the_message() -> None:
    message = _refused(
        lambda: array_from_json("x", "FP32", (2**62,) * 32, [1.0]),
        "about 2^1984 elements",
        "(32 dimensions)",
    )
    assert str(2**62) in message  # the first dimensions, in full


def test_format_shape_truncates() -> None:
    assert format_shape([1, 2, 3]) == "[1, 2, 3]"
    assert format_shape(list(range(40))) == "[0, 1, 2, 3, 4, 5, 6, 7, ... (40 dimensions)]"
    assert format_shape([10**30]) == "[huge]"


def test_a_scalar_signature_takes_a_scalar() -> None:
    spec = TensorSpec("x", "FP32", ())
    check_shape(spec, ())
    _refused(lambda: check_shape(spec, (1,)), "expected shape []", "got [1]")
    assert array_from_json("x", "FP32", (), [2.5]).shape == ()


def test_check_nesting_follows_one_path_only() -> None:
    check_nesting("x", [[1, 2], [3, 4]])
    check_nesting("x", [])
    deep: object = "leaf"
    for _ in range(MAX_DIMS + 1):
        deep = [deep]
    _refused(lambda: check_nesting("x", deep), "nested more than 32 lists deep")


def _text_signature(name: str = "text") -> Signature:
    return Signature((TensorSpec(name, "BYTES", (-1,)),), (TensorSpec("echo", "BYTES", (-1,)),))


def test_v1_bytes_nesting_is_iterative_and_bounded() -> None:
    deep: object = "x"
    for _ in range(100_000):
        deep = [deep]
    body = orjson.dumps({"inputs": [[["a"]]]})
    assert v1.decode_predict(body, _text_signature()).inputs["text"].shape == (1, 1, 1)
    _refused(
        lambda: v1.decode_predict(
            b'{"inputs": ' + b"[" * 900 + b'"x"' + b"]" * 900 + b"}", _text_signature()
        ),
        "nested more than 32 lists deep",
    )
    _refused(
        lambda: v1.decode_predict(b'{"inputs": [["a"], "b"]}', _text_signature()),
        "evenly shaped",
    )


def test_v1_b64_rows_for_a_single_bytes_input() -> None:
    body = b'{"instances": [{"b64": "aGk="}, "x", 5]}'
    _refused(lambda: v1.decode_predict(body, _text_signature()), "BYTES values must be strings")
    decoded = v1.decode_predict(b'{"instances": [{"b64": "aGk="}, "x"]}', _text_signature())
    assert decoded.inputs["text"].tolist() == [b"hi", b"x"]
    # an input named "b64" keeps the object-per-row reading
    named = v1.decode_predict(b'{"instances": [{"b64": "aGk="}]}', _text_signature("b64"))
    assert named.inputs["b64"].tolist() == [b"aGk="]


def test_v1_bare_scalar_for_a_single_scalar_input() -> None:
    signature = Signature((TensorSpec("x", "FP64", ()),), (TensorSpec("y", "FP64", ()),))
    decoded = v1.decode_predict(b'{"inputs": 2.5}', signature)
    assert decoded.inputs["x"].shape == ()
    assert orjson.loads(v1.encode_predict([("y", np.array(5.0))], False)) == {"outputs": 5.0}


def test_non_finite_outputs_are_words_in_v2_and_v1() -> None:
    values = np.array([[1.5, np.inf], [-np.inf, np.nan]], dtype=np.float32)
    words = json_data(values, words=True)
    assert orjson.loads(orjson.dumps(words, option=orjson.OPT_SERIALIZE_NUMPY)) == [
        1.5,
        "Infinity",
        "-Infinity",
        "NaN",
    ]
    payload, _ = v2.encode_response("m", "1", None, [("y", values)], [False])
    assert orjson.loads(payload)["outputs"][0]["data"] == [1.5, "Infinity", "-Infinity", "NaN"]
    assert orjson.loads(v1.encode_predict([("y", values)], True)) == {
        "predictions": [[1.5, "Infinity"], ["-Infinity", "NaN"]]
    }
    rows = v1.encode_predict([("a", values[0]), ("b", values[:, 1])], True)
    assert orjson.loads(rows) == {
        "predictions": [{"a": 1.5, "b": "Infinity"}, {"a": "Infinity", "b": "NaN"}]
    }
    # finite values keep their own precision's shortest form
    assert json_data(np.array([0.1, np.nan], dtype=np.float32), words=True) == [0.1, "NaN"]


@pytest.mark.parametrize("width", [4, 1000])  # a small and a large answer
def test_non_finite_outputs_are_words_whatever_the_answer_size(width: int) -> None:
    values = np.linspace(-1.0, 1.0, width, dtype=np.float32)
    values[width // 2] = np.nan
    finite = np.arange(width, dtype=np.float32)
    integers = np.arange(width, dtype=np.int64)
    payload, _ = v2.encode_response(
        "m", "1", "null", [("x", finite), ("y", values), ("z", integers)], [False, False, False]
    )
    outputs = orjson.loads(payload)["outputs"]
    assert outputs[1]["data"][width // 2] == "NaN"
    assert outputs[0]["data"] == finite.tolist() and outputs[2]["data"] == integers.tolist()
    clean, _ = v2.encode_response("null", "1", "null", [("null", finite)], [False])
    assert orjson.loads(clean)["outputs"][0]["data"] == finite.tolist()  # "null" names: no words


def test_non_finite_inputs_words_and_bare_literals() -> None:
    body = (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [4],'
        b' "data": [NaN, -Infinity, "Infinity", 1]}]}'
    )
    array = v2.decode_request(body, None).inputs["x"]
    assert math.isnan(array[0]) and array[1] == -np.inf and array[2] == np.inf and array[3] == 1
    for bad in (b'{"a": NaN, "b": 1', b'{"a": 1' + b"0" * 400 + b'e9, "b": NaN}'):
        _refused(lambda b=bad: load_object(b, "an object"), "not valid JSON")
    nested = b"[" * 5000 + b"NaN" + b"]" * 5000
    _refused(lambda: load_object(nested, "an object"), "not valid JSON")
    _refused(
        lambda: array_from_json("x", "FP32", (2,), ["NaN", "1.5"]),
        "expected FP32 values",
    )
    _refused(lambda: array_from_json("x", "INT32", (1,), ["NaN"]), "expected INT32 values")


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("digits", True),
        ("a.b-c_9", True),
        ("x" * 128, True),
        ("digits\n", False),
        ("x" * 129, False),
        ("..", False),
        ("a/b", False),
        ("", False),
    ],
)
def test_model_names(name: str, valid: bool) -> None:
    assert is_valid_model_name(name) is valid


def test_text_logs_escape_control_characters() -> None:
    formatter = TextFormatter(TEXT_FORMAT)
    record = logging.LogRecord(
        "gateway.requests",
        logging.DEBUG,
        __file__,
        1,
        "%s %s 404",
        ("v2", "m\r\nFORGED\x1b[2J"),
        None,
    )
    line = formatter.format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line.endswith("v2 m\\r\\nFORGED\\x1b[2J 404")
    assert escape_controls("plain é text") == "plain é text"
    assert escape_controls("a\u2028b\x85c\x7f") == "a\\u2028b\\x85c\\x7f"
