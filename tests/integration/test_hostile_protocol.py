"""Promises about hostile requests (SPEC 2 and 10): each one is refused with a 4xx and a
message saying what was expected and what arrived, or works, in bounded time, and never
answers 500 or holds up another caller.

One test per promise; each docstring states it.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from gateway.protocol.datatypes import DATATYPES
from tests import onnx_models
from tests.conftest import RunningGateway
from tests.gateway_process import serving

pytestmark = pytest.mark.integration

# one valid row per input of the all-datatypes model, so a test can vary one input alone
TYPES_ROW: dict[str, list[object]] = {
    "BOOL": [True, False, True],
    "INT8": [1, 2, 3],
    "INT16": [1, 2, 3],
    "INT32": [1, 2, 3],
    "INT64": [1, 2, 3],
    "UINT8": [1, 2, 3],
    "UINT16": [1, 2, 3],
    "UINT32": [1, 2, 3],
    "UINT64": [1, 2, 3],
    "FP16": [0.5, 1.5, 2.5],
    "FP32": [0.5, 1.5, 2.5],
    "FP64": [0.5, 1.5, 2.5],
    "BYTES": ["a", "b", "c"],
}
MESSAGE_LIMIT = 400  # characters: no message prints a huge number or list in full


def _types_request(**override: Mapping[str, object]) -> dict[str, list[dict[str, object]]]:
    """A valid request to the 'types' model, with the tensors named by datatype replaced."""
    inputs = []
    for datatype in DATATYPES:
        tensor: dict[str, object] = {
            "name": f"in_{datatype}",
            "datatype": datatype,
            "shape": [1, 3],
            "data": TYPES_ROW[datatype],
        }
        tensor.update(override.get(datatype, {}))
        inputs.append(tensor)
    return {"inputs": inputs}


def _error(response: httpx.Response, status: int, *phrases: str) -> str:
    """Assert a JSON error of ``status`` whose message holds every phrase; the message."""
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert set(body) == {"error"}
    message: str = body["error"]
    assert len(message) <= MESSAGE_LIMIT, message[:500]
    for phrase in phrases:
        assert phrase in message, message
    return message


def _post_json(client: httpx.Client, path: str, document: object) -> httpx.Response:
    return client.post(path, content=json.dumps(document).encode())


def test_a_16000_dimension_shape_is_refused_at_once_and_stalls_nobody(
    gateway: RunningGateway,
) -> None:
    """A shape of 16,000 huge dimensions is refused (400, "at most 32 dimensions") after
    work linear in its size, and another client's GET /v2/health/live answers within 1 s
    the whole time."""
    document = _types_request(FP32={"shape": [2**62] * 16_000, "data": [1.0]})
    body = json.dumps(document).encode()
    result: dict[str, object] = {}

    def big_request() -> None:
        with httpx.Client(base_url=gateway.url, timeout=60) as other:
            started = time.monotonic()
            for _ in range(5):  # a few in a row, to keep the loop busy while we probe
                result["response"] = other.post("/v2/models/types/infer", content=body)
            result["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=big_request, daemon=True)
    slowest = 0.0
    with httpx.Client(base_url=gateway.url, timeout=10) as probe:
        worker.start()
        for _ in range(200):  # bounded: the big requests end long before
            started = time.monotonic()
            assert probe.get("/v2/health/live").status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            if not worker.is_alive():
                break
            time.sleep(0.005)
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert slowest < 1.0, f"health/live took {slowest:.2f} s while the big shape was parsed"
    assert isinstance(result["seconds"], float) and result["seconds"] < 20
    response = result["response"]
    assert isinstance(response, httpx.Response)
    _error(response, 400, "in_FP32", "at most 32 dimensions", "got 16000")


@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
def test_a_dimension_of_2_64_is_refused_as_out_of_range_in_json(
    client: httpx.Client, datatype: str
) -> None:
    """A dimension outside [0, 2^63), with empty JSON data, is 400 naming the range."""
    document = _types_request(**{datatype: {"shape": [0, 2**64 - 1], "data": []}})
    response = _post_json(client, "/v2/models/types/infer", document)
    _error(response, 400, f"in_{datatype}", "[0, 2^63)")


@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
def test_a_dimension_of_2_64_is_refused_as_out_of_range_in_binary(
    client: httpx.Client, datatype: str
) -> None:
    """The same shape with binary tensor data (binary_data_size 0) is 400 too."""
    document = _types_request(
        **{datatype: {"shape": [0, 2**64 - 1], "parameters": {"binary_data_size": 0}}}
    )
    del next(t for t in document["inputs"] if t["name"] == f"in_{datatype}")["data"]
    header = json.dumps(document).encode()
    response = client.post(
        "/v2/models/types/infer",
        content=header,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    _error(response, 400, f"in_{datatype}", "[0, 2^63)")


@pytest.mark.parametrize("framing", ["json", "binary"])
def test_an_empty_tensor_with_a_huge_other_dimension_is_400(
    client: httpx.Client, framing: str
) -> None:
    """Shape [0, 2^63 - 1] is in range and holds no elements, but no tensor of its other
    dimensions fits in memory: 400 saying so (not numpy's ValueError as a 500)."""
    tensor: dict[str, object] = {"shape": [0, 2**63 - 1], "data": []}
    headers = {}
    if framing == "binary":
        tensor = {"shape": [0, 2**63 - 1], "parameters": {"binary_data_size": 0}}
    document = _types_request(FP32=tensor)
    if framing == "binary":
        del next(t for t in document["inputs"] if t["name"] == "in_FP32")["data"]
    body = json.dumps(document).encode()
    if framing == "binary":
        headers = {"Inference-Header-Content-Length": str(len(body))}
    response = client.post("/v2/models/types/infer", content=body, headers=headers)
    _error(response, 400, "in_FP32", "holds no elements", "2^63 bytes")


def test_a_shape_of_more_than_64_dimensions_is_400(client: httpx.Client) -> None:
    """70 dimensions (past numpy's own limit of 64) is 400, "at most 32 dimensions"."""
    document = _types_request(INT32={"shape": [1] * 70, "data": [1]})
    response = _post_json(client, "/v2/models/types/infer", document)
    _error(response, 400, "in_INT32", "at most 32 dimensions", "got 70")


def test_an_element_count_too_long_to_print_is_400_with_a_short_message(
    client: httpx.Client,
) -> None:
    """300 dimensions of 2^62 (an element count of 5,600 digits, past Python's int-to-text
    limit) is 400; the count is never printed in full."""
    document = _types_request(FP32={"shape": [2**62] * 300, "data": [1.0]})
    response = _post_json(client, "/v2/models/types/infer", document)
    _error(response, 400, "at most 32 dimensions", "got 300")


def test_a_huge_element_count_within_32_dimensions_is_summarised(client: httpx.Client) -> None:
    """32 dimensions of 2^62 is a valid shape whose element count (600 digits) does not
    match the data: 400 giving the count as a power of two, the shape truncated."""
    document = _types_request(FP32={"shape": [2**62] * 32, "data": [1.0]})
    response = _post_json(client, "/v2/models/types/infer", document)
    _error(response, 400, "in_FP32", "about 2^1984 elements", "(32 dimensions)", "has 1")


VERSION_PATHS: list[tuple[str, str]] = [
    ("GET", "/v2/models/types/versions/{v}"),
    ("GET", "/v2/models/types/versions/{v}/ready"),
    ("POST", "/v2/models/types/versions/{v}/infer"),
    ("GET", "/v1/models/types/versions/{v}"),
    ("POST", "/v1/models/types/versions/{v}:predict"),
]


@pytest.mark.parametrize(("method", "path"), VERSION_PATHS)
@pytest.mark.parametrize("version", ["1" * 4400, "1" * 19])
def test_a_version_segment_that_is_not_1_to_18_digits_is_404(
    client: httpx.Client, method: str, path: str, version: str
) -> None:
    """On the five endpoints that take a version, a segment of 19 or 4,400 digits is 404
    with a short message (4,400 digits used to reach int() and answer 500)."""
    document = _types_request() if method == "POST" else None
    response = client.request(method, path.format(v=version), content=json.dumps(document).encode())
    _error(response, 404, "model 'types' has no version", "at most 18 digits")


def test_a_scalar_input_and_output_work_in_v2(client: httpx.Client) -> None:
    """A rank-0 input (shape []) works in v2, JSON in and out, and its rank-0 output comes
    back with shape []."""
    document = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [], "data": [3.0]},
            {"name": "v", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]},
        ]
    }
    response = _post_json(client, "/v2/models/scalar/infer", document)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["y"]["shape"] == [] and outputs["y"]["data"] == [6.0]
    assert outputs["scaled"]["shape"] == [2, 2]
    assert outputs["scaled"]["data"] == [3.0, 6.0, 9.0, 12.0]


def test_a_scalar_input_works_in_v2_binary(client: httpx.Client) -> None:
    """The same with binary tensor data both ways: 4 bytes for the scalar."""
    document = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [], "parameters": {"binary_data_size": 4}},
            {"name": "v", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]},
        ],
        "parameters": {"binary_data_output": True},
    }
    header = json.dumps(document).encode()
    response = client.post(
        "/v2/models/scalar/infer",
        content=header + struct.pack("<f", 0.5),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    meta = json.loads(response.content[:length])
    assert [(o["name"], o["shape"]) for o in meta["outputs"]] == [("y", []), ("scaled", [1, 2])]
    assert struct.unpack("<f", response.content[length : length + 4]) == (1.0,)


def test_a_scalar_input_works_in_v1_columnar(client: httpx.Client) -> None:
    """A rank-0 input works in TF-Serving columnar form ({"inputs": {"x": 3.0, ...}}); the
    rank-0 output is a bare number."""
    response = _post_json(
        client, "/v1/models/scalar:predict", {"inputs": {"x": 3.0, "v": [[1, 2]]}}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"outputs": {"y": 6.0, "scaled": [[3.0, 6.0]]}}


def test_a_scalar_input_in_v1_rows_is_400_saying_send_columns(client: httpx.Client) -> None:
    """Rows give every input a batch dimension, which a scalar has not: 400 with the
    expected and received shapes."""
    response = _post_json(
        client, "/v1/models/scalar:predict", {"instances": [{"x": 3.0, "v": [1, 2]}]}
    )
    _error(response, 400, "input 'x'", "expected shape []", "got [1]")


def _nested(depth: int, leaf: object) -> object:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("path", "document"),
    [
        ("/v1/models/text:predict", {"inputs": _nested(900, "x")}),
        ("/v1/models/text:predict", {"instances": _nested(900, "x")}),
        ("/v1/models/lookup:predict", {"inputs": _nested(900, 1)}),
        ("/v1/models/lookup:predict", {"instances": _nested(40, 1)}),
    ],
    ids=["bytes-columns", "bytes-rows", "numbers-columns", "numbers-rows"],
)
def test_values_nested_deeper_than_32_lists_are_400_in_v1(
    client: httpx.Client, path: str, document: object
) -> None:
    """v1 values nested 900 lists deep (or 40) are 400 after bounded work, not a
    RecursionError with its 136 KB traceback in the log."""
    response = _post_json(client, path, document)
    _error(response, 400, "nested more than 32 lists deep")


def test_b64_rows_work_for_a_single_bytes_input_model(client: httpx.Client) -> None:
    """TF Serving's {"b64": ...} is a bytes value: in bare-list instances of a model with
    one BYTES input, and in columnar inputs."""
    hello = base64.b64encode(b"hello").decode()
    world = base64.b64encode(b"world").decode()
    rows = _post_json(
        client, "/v1/models/text:predict", {"instances": [{"b64": hello}, {"b64": world}]}
    )
    assert rows.status_code == 200, rows.text
    assert rows.json() == {"predictions": ["hello", "world"]}
    mixed = _post_json(client, "/v1/models/text:predict", {"instances": [{"b64": hello}, "x"]})
    assert mixed.status_code == 200, mixed.text
    assert mixed.json() == {"predictions": ["hello", "x"]}
    columns = _post_json(client, "/v1/models/text:predict", {"inputs": [{"b64": world}]})
    assert columns.status_code == 200, columns.text
    assert columns.json() == {"outputs": ["world"]}
    named = _post_json(client, "/v1/models/text:predict", {"instances": [{"text": {"b64": hello}}]})
    assert named.status_code == 200, named.text
    assert named.json() == {"predictions": ["hello"]}


@pytest.mark.parametrize("text", ["%%%", "é"])
def test_invalid_b64_is_400(client: httpx.Client, text: str) -> None:
    """A {"b64": ...} row that is not base64 (non-ASCII included) is 400 naming the input."""
    response = _post_json(client, "/v1/models/text:predict", {"instances": [{"b64": text}]})
    _error(response, 400, "input 'text'", "invalid base64")


def test_non_finite_outputs_are_the_strings_nan_and_infinity(client: httpx.Client) -> None:
    """FP32 overflow is the model's answer: 200, with non-finite values written as the
    JSON strings "Infinity", "-Infinity" and "NaN" (never null), which numpy and
    tritonclient read back as floats."""
    document = _types_request(
        FP32={"data": [1e300, -1e300, 1.5]}, FP64={"data": ["NaN", "Infinity", 0.25]}
    )
    response = _post_json(client, "/v2/models/types/infer", document)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert outputs["out_FP32"] == ["Infinity", "-Infinity", 1.5]
    assert outputs["out_FP64"] == ["NaN", "Infinity", 0.25]
    v1 = _post_json(client, "/v1/models/scalar:predict", {"inputs": {"x": 1e300, "v": [[1, -1]]}})
    assert v1.status_code == 200, v1.text
    assert v1.json() == {"outputs": {"y": "Infinity", "scaled": [["Infinity", "-Infinity"]]}}


def test_non_finite_inputs_are_read_from_bare_literals_and_strings(client: httpx.Client) -> None:
    """Bare NaN / Infinity / -Infinity (what Python's json and tritonclient write) and the
    strings "NaN" / "Infinity" / "-Infinity" are read as floats; any other string in
    numeric data is still 400."""
    document = _types_request(FP32={"data": ["__NAN__", "-Infinity", 2.0]})
    body = json.dumps(document).encode().replace(b'"__NAN__"', b"NaN")
    response = client.post("/v2/models/types/infer", content=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert outputs["out_FP32"] == ["NaN", "-Infinity", 2.0]
    bad = _post_json(
        client, "/v2/models/types/infer", _types_request(FP32={"data": ["1.5", 1.0, 2.0]})
    )
    _error(bad, 400, "in_FP32", "expected FP32 values")


@pytest.mark.parametrize("binary", [False, True])
def test_non_finite_values_round_trip_through_tritonclient(
    gateway: RunningGateway, binary: bool
) -> None:
    """tritonclient, JSON or binary both ways, sends NaN and infinities and reads them
    back as they were (JSON: its bare NaN literals in, our strings out)."""
    import numpy as np
    import tritonclient.http as triton

    values = np.array([[np.nan, np.inf, -np.inf, 1.5]], dtype=np.float32)
    client = triton.InferenceServerClient(url=gateway.authority, network_timeout=30)
    try:
        x = triton.InferInput("x", [], "FP32")
        x.set_data_from_numpy(np.array(1.0, dtype=np.float32), binary_data=binary)
        v = triton.InferInput("v", [2, 2], "FP32")
        v.set_data_from_numpy(values.reshape(2, 2), binary_data=binary)
        outputs = [triton.InferRequestedOutput("scaled", binary_data=binary)]
        result = client.infer("scalar", [x, v], outputs=outputs)
    finally:
        client.close()
    np.testing.assert_array_equal(result.as_numpy("scaled"), values.reshape(2, 2))


@pytest.mark.parametrize("name", ["types%0A", "types%0D%0AFORGED", "types%00"])
def test_a_model_name_with_a_control_character_is_not_a_valid_name(
    client: httpx.Client, name: str
) -> None:
    """A trailing newline (or any control character) makes a name invalid: 404 saying
    so, on metadata and inference alike."""
    for response in (
        client.get(f"/v2/models/{name}"),
        client.post(f"/v2/models/{name}/infer", content=b"{}"),
    ):
        _error(response, 404, "is not a valid model name")


def test_a_forged_log_line_in_a_model_name_stays_on_one_line(tmp_path: Path) -> None:
    """With --log-format text, a request whose model name carries %0D%0A writes one log
    line with the CR LF escaped, not a second, forged line."""
    repository = tmp_path / "repository"
    onnx_models.write_model(repository, "text", 1, onnx_models.text_echo())
    log_path = tmp_path / "gateway.log"
    args = ["--model-repository", str(repository)]
    env = {"GATEWAY_LOG_FORMAT": "text", "GATEWAY_LOG_LEVEL": "debug"}
    with serving(args, log_path, env=env) as gateway:
        response = httpx.post(
            f"{gateway.url}/v2/models/text%0D%0AFORGED%20ERROR%20line/infer",
            content=b"{}",
            timeout=10,
        )
        _error(response, 404, "is not a valid model name")
        deadline = time.monotonic() + 10
        lines: list[str] = []
        while time.monotonic() < deadline:  # the request line is written after the answer
            lines = log_path.read_text(errors="replace").splitlines()
            if any("FORGED" in line for line in lines):
                break
            time.sleep(0.05)
    forged = [line for line in lines if "FORGED" in line]
    assert len(forged) == 1, lines[-10:]
    assert "text\\r\\nFORGED ERROR line" in forged[0]
    assert not forged[0].startswith("FORGED")
