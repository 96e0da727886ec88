"""Inference over HTTP, checked against onnxruntime run directly on the same files."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import pytest

from gateway.protocol.datatypes import DATATYPES, NUMPY_DTYPES
from tests.unit.test_tensors import SAMPLES

pytestmark = pytest.mark.integration

RNG = np.random.default_rng(1234)
PIXELS = RNG.integers(0, 17, size=(5, 64)).astype(np.float32)


def _direct(
    repository: Path, model: str, version: int, feeds: dict[str, np.ndarray]
) -> list[np.ndarray]:
    """The model's outputs from onnxruntime itself (untyped: its outputs as it documents
    them, a list of arrays)."""
    session = ort.InferenceSession(str(repository / model / str(version) / "model.onnx"))
    outputs: list[np.ndarray] = session.run(None, feeds)
    return outputs


def _f32(data: object) -> np.ndarray:
    return np.array(data, dtype=np.float32)


def _v2_body(name: str, array: np.ndarray, datatype: str = "FP32", **extra: object) -> bytes:
    tensor = {
        "name": name,
        "shape": list(array.shape),
        "datatype": datatype,
        "data": array.ravel().tolist(),
    }
    return orjson.dumps({"inputs": [tensor], **extra})


@pytest.mark.parametrize("version", [1, 2])
def test_v2_json_matches_onnxruntime(
    client: httpx.Client, test_repository: Path, version: int
) -> None:
    response = client.post(
        f"/v2/models/digits/versions/{version}/infer", content=_v2_body("pixels", PIXELS, id="q")
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "digits" and body["model_version"] == str(version)
    assert body["id"] == "q"
    (output,) = body["outputs"]
    assert output["name"] == "probabilities" and output["shape"] == [5, 10]
    expected = _direct(test_repository, "digits", version, {"pixels": PIXELS})[0]
    # float32 values survive JSON exactly: the shortest repr parses back to the same float32
    np.testing.assert_array_equal(_f32(output["data"]).reshape(5, 10), expected)


def test_versions_really_differ(client: httpx.Client) -> None:
    outputs = []
    for version in (1, 2):
        response = client.post(
            f"/v2/models/digits/versions/{version}/infer", content=_v2_body("pixels", PIXELS)
        )
        outputs.append(np.array(response.json()["outputs"][0]["data"]))
    assert not np.allclose(outputs[0], outputs[1])


def test_v2_binary_request_and_response(client: httpx.Client, test_repository: Path) -> None:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "shape": [5, 64],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": PIXELS.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    response = client.post(
        "/v2/models/digits/infer",
        content=header + PIXELS.tobytes(),
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    meta = orjson.loads(response.content[:length])
    assert meta["outputs"][0]["parameters"] == {"binary_data_size": 5 * 10 * 4}
    got = np.frombuffer(response.content[length:], dtype="<f4").reshape(5, 10)
    expected = _direct(test_repository, "digits", 2, {"pixels": PIXELS})[0]
    np.testing.assert_array_equal(got, expected)


def _all_types_inputs(rows: list[int]) -> dict[str, np.ndarray]:
    arrays = {}
    for datatype in DATATYPES:
        values = np.array(SAMPLES[datatype], dtype=object).reshape(2, 3)[rows]
        if datatype == "BYTES":
            arrays[f"in_{datatype}"] = np.vectorize(str.encode, otypes=[object])(values)
        else:
            arrays[f"in_{datatype}"] = values.astype(NUMPY_DTYPES[datatype])
    return arrays


def test_every_datatype_as_json(client: httpx.Client) -> None:
    inputs = [
        {"name": f"in_{dt}", "shape": [2, 3], "datatype": dt, "data": SAMPLES[dt]}
        for dt in DATATYPES
    ]
    response = client.post("/v2/models/types/infer", content=orjson.dumps({"inputs": inputs}))
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    for datatype in DATATYPES:
        output = outputs[f"out_{datatype}"]
        assert output["datatype"] == datatype and output["shape"] == [2, 3]
        if datatype in ("FP16", "FP32"):
            expected = np.array(SAMPLES[datatype], dtype=np.float64)
            np.testing.assert_allclose(output["data"], expected, rtol=1e-3)
        else:
            assert output["data"] == SAMPLES[datatype], datatype


def test_every_datatype_as_binary(client: httpx.Client) -> None:
    arrays = _all_types_inputs([0, 1])
    chunks, inputs = [], []
    for name, array in arrays.items():
        datatype = name.removeprefix("in_")
        if datatype == "BYTES":
            raw = b"".join(struct.pack("<I", len(b)) + b for b in array.ravel())
        else:
            raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        chunks.append(raw)
        inputs.append(
            {
                "name": name,
                "shape": [2, 3],
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
    header = orjson.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}})
    response = client.post(
        "/v2/models/types/infer",
        content=header + b"".join(chunks),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    meta = orjson.loads(response.content[:length])
    offset = length
    for output, raw in zip(meta["outputs"], chunks, strict=True):
        size = output["parameters"]["binary_data_size"]
        assert response.content[offset : offset + size] == raw, output["name"]
        offset += size
    assert offset == len(response.content)


def test_output_selection_and_per_output_binary(client: httpx.Client) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.ones((2, 4), dtype=np.int64)
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "a", "shape": [2, 4], "datatype": "FP32", "data": a.ravel().tolist()},
                {"name": "b", "shape": [2, 4], "datatype": "INT64", "data": b.ravel().tolist()},
            ],
            "outputs": [{"name": "first", "parameters": {"binary_data": True}}, {"name": "sum"}],
        }
    )
    response = client.post("/v2/models/pair/versions/2/infer", content=body)
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    meta = orjson.loads(response.content[:length])
    assert [o["name"] for o in meta["outputs"]] == ["first", "sum"]
    assert np.frombuffer(response.content[length:], "<f4").tolist() == [0.0, 4.0]
    assert meta["outputs"][1]["data"] == ((a + b) * 2).ravel().tolist()
    only = orjson.dumps({"inputs": orjson.loads(body)["inputs"], "outputs": [{"name": "sum"}]})
    response = client.post("/v2/models/pair/versions/1/infer", content=only)
    assert [o["name"] for o in response.json()["outputs"]] == ["sum"]


def test_v1_rows_columns_and_objects(client: httpx.Client, test_repository: Path) -> None:
    expected = _direct(test_repository, "digits", 2, {"pixels": PIXELS})[0]
    rows = client.post("/v1/models/digits:predict", json={"instances": PIXELS.tolist()})
    assert rows.status_code == 200, rows.text
    np.testing.assert_array_equal(_f32(rows.json()["predictions"]), expected)
    objects = client.post(
        "/v1/models/digits:predict", json={"instances": [{"pixels": r} for r in PIXELS.tolist()]}
    )
    np.testing.assert_array_equal(_f32(objects.json()["predictions"]), expected)
    columns = client.post("/v1/models/digits:predict", json={"inputs": PIXELS.tolist()})
    np.testing.assert_array_equal(_f32(columns.json()["outputs"]), expected)
    named = client.post("/v1/models/digits:predict", json={"inputs": {"pixels": PIXELS.tolist()}})
    np.testing.assert_array_equal(_f32(named.json()["outputs"]), expected)


def test_v1_multi_output_model(client: httpx.Client, test_repository: Path) -> None:
    features = np.array([[35, 400, 1200.5, 3, 40.0, 0], [22, 5, 10.0, 40, 300.0, 2]], np.float32)
    probabilities, labels = _direct(test_repository, "fraud", 1, {"features": features})
    response = client.post("/v1/models/fraud:predict", json={"instances": features.tolist()})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == labels.tolist()
    np.testing.assert_array_equal(_f32([p["probabilities"] for p in predictions]), probabilities)
    columns = client.post("/v1/models/fraud:predict", json={"inputs": features.tolist()}).json()
    assert columns["outputs"]["label"] == labels.tolist()


def test_v1_multi_input_model(client: httpx.Client) -> None:
    rows = [{"a": [1, 2, 3, 4], "b": [1, 1, 1, 1]}, {"a": [0, 0, 0, 0], "b": [5, 5, 5, 5]}]
    response = client.post("/v1/models/pair/versions/2:predict", json={"instances": rows})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [
        {"sum": [4.0, 6.0, 8.0, 10.0], "first": 1.0},
        {"sum": [10.0, 10.0, 10.0, 10.0], "first": 0.0},
    ]


def test_model_without_batch_dimension(client: httpx.Client) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    response = client.post("/v2/models/fixed/infer", content=_v2_body("x", x))
    assert response.json()["outputs"][0]["data"] == (-x).ravel().tolist()
    response = client.post("/v1/models/fixed:predict", json={"instances": x.tolist()})
    assert response.json()["predictions"] == (-x).tolist()


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_request_bodies(client: httpx.Client, encoding: str) -> None:
    body = _v2_body("pixels", PIXELS)
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    response = client.post(
        "/v2/models/digits/infer", content=packed, headers={"Content-Encoding": encoding}
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [5, 10]


def test_values_beyond_a_float_type_overflow_to_infinity(client: httpx.Client) -> None:
    """FP16 holds at most 65504 and FP32 about 3.4e38: larger JSON numbers become inf
    (the JSON string "Infinity" on the way out), as a cast does, never a warning turned
    into a 500."""
    inputs = [
        {"name": f"in_{dt}", "shape": [1, 3], "datatype": dt, "data": SAMPLES[dt][:3]}
        for dt in DATATYPES
    ]
    for tensor in inputs:
        if tensor["datatype"] == "FP16":
            tensor["data"] = [1e6, -1e6, 1.0]
        if tensor["datatype"] == "FP32":
            tensor["data"] = [1e300, 2.0, 3.0]
    response = client.post("/v2/models/types/infer", content=orjson.dumps({"inputs": inputs}))
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert outputs["out_FP16"] == ["Infinity", "-Infinity", 1.0]
    assert outputs["out_FP32"] == ["Infinity", 2.0, 3.0]
