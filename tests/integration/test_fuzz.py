"""Property tests: whatever a caller sends, the gateway answers below 500 and keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import Settings
from gateway.protocol.datatypes import DATATYPES
from tests.conftest import (
    SERVER_MAX_BODY,
    RunningGateway,
    build_test_repository,
    start_gateway,
    stop_gateway,
)

pytestmark = pytest.mark.integration

Document = dict[str, object]  # a request document, as json.dumps takes it

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
names = st.sampled_from(
    ["pixels", "a", "b", "in_FP16", "in_BYTES", "x", "", "user_id", "features", "balance"]
) | st.text(max_size=5)
shapes = st.lists(st.integers(min_value=-2, max_value=70), max_size=4) | json_values
tensor = st.fixed_dictionaries(
    {
        "name": names,
        "shape": shapes,
        "datatype": st.sampled_from([*DATATYPES, "FP8", ""]) | st.text(max_size=4),
    },
    optional={
        "data": json_values
        | st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=70),
        "parameters": st.dictionaries(
            st.sampled_from(["binary_data_size", "timeout_ms", "x"]), scalars, max_size=2
        ),
    },
)
v2_documents = st.fixed_dictionaries(
    {"inputs": st.lists(tensor, max_size=3) | json_values},
    optional={
        "id": scalars,
        "outputs": st.lists(st.fixed_dictionaries({"name": names}), max_size=2) | json_values,
        "parameters": st.dictionaries(
            st.sampled_from(["binary_data_output", "timeout_ms"]), scalars, max_size=2
        ),
    },
)
v1_documents = st.fixed_dictionaries(
    {},
    optional={
        "instances": json_values | st.lists(st.lists(st.integers(0, 16), max_size=65), max_size=3),
        "inputs": json_values,
        "signature_name": scalars,
    },
)
v2_paths = st.sampled_from(
    [
        "/v2/models/digits/infer",
        "/v2/models/pair/infer",
        "/v2/models/types/infer",
        "/v2/models/fixed/infer",
        "/v2/models/lookup/infer",
        "/v2/models/digits/versions/1/infer",
        "/v2/models/fraud/infer",
    ]
)
v1_paths = st.sampled_from(
    [
        "/v1/models/digits:predict",
        "/v1/models/pair:predict",
        "/v1/models/types:predict",
        "/v1/models/fraud:predict",
        "/v1/models/fixed:predict",
    ]
)


@st.composite
def nearly_valid_types_requests(draw: st.DrawFn) -> Document:
    """Right names and shapes for the all-datatypes model, with drawn datatypes and values."""
    rows = draw(st.integers(min_value=0, max_value=3))
    inputs = []
    for datatype in draw(st.lists(st.sampled_from(DATATYPES), min_size=1, unique=True)):
        declared = draw(st.sampled_from(DATATYPES)) if draw(st.booleans()) else datatype
        data = draw(st.lists(scalars, min_size=rows * 3, max_size=rows * 3))
        inputs.append(
            {"name": f"in_{datatype}", "shape": [rows, 3], "datatype": declared, "data": data}
        )
    return {"inputs": inputs}


@st.composite
def nearly_valid_feature_requests(draw: st.DrawFn) -> Document:
    """Entity ids (and perhaps feature fields) for the fraud model, with drawn datatypes,
    shapes and values."""
    rows = draw(st.integers(min_value=0, max_value=3))
    shape = draw(st.sampled_from([[rows], [rows, 1], [1, rows], [rows, 2]]))
    count = 1
    for size in shape:
        count *= size
    ids = {
        "name": "user_id",
        "shape": shape,
        "datatype": draw(st.sampled_from(["BYTES", "BYTES", "FP32", "INT64"])),
        "data": draw(st.lists(st.text(max_size=6) | scalars, min_size=count, max_size=count)),
    }
    inputs = [ids]
    for field in draw(st.lists(st.sampled_from(["age", "balance", "features"]), unique=True)):
        size = draw(st.sampled_from([rows, rows + 1]))
        data = draw(st.lists(st.floats(allow_nan=False, width=32), min_size=size, max_size=size))
        datatype = draw(st.sampled_from(["FP32", "FP64", "INT8", "BYTES"]))
        inputs.append({"name": field, "shape": [size], "datatype": datatype, "data": data})
    return {"inputs": inputs}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """A gateway of this module's own: what other modules do to the shared one (routing,
    reloads) cannot change what is fuzzed here, and the fuzzing cannot reach them."""
    running = start_gateway(
        Settings(
            model_repository=build_test_repository(tmp_path_factory.mktemp("fuzz")),
            max_body_bytes=SERVER_MAX_BODY,
        )
    )
    yield running
    stop_gateway(running)


@pytest.fixture
def http(fuzzed: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzzed.url, timeout=30) as client:
        yield client


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}


def _still_serving(http: httpx.Client) -> None:
    """Each fuzzing test ends with this: whichever tests ran before, the gateway kept
    serving through its own fuzzing."""
    response = http.post("/v1/models/digits:predict", json={"instances": [[0] * 64]})
    assert response.status_code == 200, response.text


def test_v2_structured_documents(http: httpx.Client) -> None:
    @FUZZ
    @given(path=v2_paths, document=v2_documents)
    def post(path: str, document: Document) -> None:
        _check(http.post(path, content=json.dumps(document).encode()))

    post()
    _still_serving(http)


def test_v2_binary_framing(http: httpx.Client) -> None:
    @FUZZ
    @given(
        path=v2_paths,
        document=v2_documents,
        blob=st.binary(max_size=64),
        length=st.integers(min_value=-5, max_value=400)
        | st.text(alphabet="0123456789abcx+-.", min_size=1, max_size=4),
    )
    def post(path: str, document: Document, blob: bytes, length: object) -> None:
        header = json.dumps(document).encode()
        response = http.post(
            path, content=header + blob, headers={"Inference-Header-Content-Length": str(length)}
        )
        _check(response)

    post()
    _still_serving(http)


def test_v1_documents(http: httpx.Client) -> None:
    @FUZZ
    @given(path=v1_paths, document=v1_documents)
    def post(path: str, document: Document) -> None:
        _check(http.post(path, content=json.dumps(document).encode()))

    post()
    _still_serving(http)


def test_arbitrary_bytes(http: httpx.Client) -> None:
    @FUZZ
    @given(path=v2_paths | v1_paths, body=st.binary(max_size=200))
    def post(path: str, body: bytes) -> None:
        _check(http.post(path, content=body))

    post()
    _still_serving(http)


def test_nearly_valid_tensors(http: httpx.Client) -> None:
    @FUZZ
    @given(document=nearly_valid_types_requests())
    def post(document: Document) -> None:
        _check(http.post("/v2/models/types/infer", content=json.dumps(document).encode()))

    post()
    _still_serving(http)


def test_v2_feature_requests(http: httpx.Client) -> None:
    @FUZZ
    @given(document=nearly_valid_feature_requests())
    def post(document: Document) -> None:
        _check(http.post("/v2/models/fraud/infer", content=json.dumps(document).encode()))

    post()
    _still_serving(http)


# hostile shapes, nesting, datatypes and binary framings (SPEC 10): whatever they are, the
# answer is 200 or a 4xx with a JSON error, and the server keeps answering others
HOSTILE = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
huge_ints = st.sampled_from([2**31, 2**32 - 1, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1])
dimensions = (
    st.integers(min_value=0, max_value=4)
    | st.integers(min_value=-(2**63), max_value=-1)
    | huge_ints
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
)
hostile_shapes = (
    st.lists(dimensions, max_size=6)
    | st.lists(st.integers(min_value=0, max_value=2), min_size=30, max_size=70)
    | st.builds(lambda n, d: [d] * n, st.integers(min_value=33, max_value=20_000), dimensions)
    | st.builds(lambda n: [0, *[2**63 - 1] * n], st.integers(min_value=1, max_value=31))
)


def _deep(depth: int, leaf: object) -> object:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


nested_data = st.builds(
    _deep,
    st.integers(min_value=0, max_value=1100),
    st.sampled_from([1, 1.5, "x", {"b64": "aGk="}, None, 2**64 - 1]),
)
hostile_data = nested_data | st.lists(scalars | huge_ints, max_size=8) | json_values
hostile_tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["in_FP32", "in_BYTES", "in_INT64", "x", "v", "a", "index"]),
        "shape": hostile_shapes,
        "datatype": st.sampled_from(DATATYPES),
    },
    optional={"data": hostile_data},
)
hostile_paths = st.sampled_from(
    [
        "/v2/models/types/infer",
        "/v2/models/scalar/infer",
        "/v2/models/lookup/infer",
        "/v2/models/pair/infer",
        "/v2/models/types/versions/1/infer",
    ]
)


def _check_live(http: httpx.Client, response: httpx.Response) -> None:
    _check(response)
    assert http.get("/v2/health/live").status_code == 200


@HOSTILE
@given(path=hostile_paths, inputs=st.lists(hostile_tensor, min_size=1, max_size=3))
def test_v2_hostile_shapes_and_nesting(
    http: httpx.Client, path: str, inputs: list[dict[str, object]]
) -> None:
    _check_live(http, http.post(path, content=json.dumps({"inputs": inputs}).encode()))


@HOSTILE
@given(
    path=hostile_paths,
    inputs=st.lists(hostile_tensor, min_size=1, max_size=3),
    sizes=st.lists(
        st.integers(min_value=-5, max_value=64) | huge_ints | st.just(-(2**63)), max_size=3
    ),
    blob=st.binary(max_size=64),
    length=st.sampled_from(["exact", "short", "long", "negative", "huge", "junk"]),
)
def test_v2_hostile_binary_framing(
    http: httpx.Client,
    path: str,
    inputs: list[dict[str, object]],
    sizes: list[int],
    blob: bytes,
    length: str,
) -> None:
    for tensor, size in zip(inputs, sizes, strict=False):
        tensor.pop("data", None)
        tensor["parameters"] = {"binary_data_size": size}
    header = json.dumps({"inputs": inputs}).encode()
    value = {
        "exact": str(len(header)),
        "short": str(max(len(header) - 3, 0)),
        "long": str(len(header) + len(blob) + 1),
        "negative": "-1",
        "huge": str(2**64),
        "junk": "1e3",
    }[length]
    response = http.post(
        path, content=header + blob, headers={"Inference-Header-Content-Length": value}
    )
    _check_live(http, response)


hostile_v1_values = (
    nested_data
    | st.builds(lambda rows, value: [value] * rows, st.integers(0, 3), nested_data)
    | st.lists(st.fixed_dictionaries({"b64": st.text(max_size=8)}) | st.text(max_size=4))
    | json_values
)


@HOSTILE
@given(
    path=st.sampled_from(
        [
            "/v1/models/text:predict",
            "/v1/models/scalar:predict",
            "/v1/models/lookup:predict",
            "/v1/models/types:predict",
        ]
    ),
    key=st.sampled_from(["instances", "inputs"]),
    value=hostile_v1_values,
    named=st.booleans(),
)
def test_v1_hostile_nesting(
    http: httpx.Client, path: str, key: str, value: object, named: bool
) -> None:
    if named and key == "inputs":
        value = {"x": value, "v": value, "text": value, "index": value}
    _check_live(http, http.post(path, content=json.dumps({key: value}).encode()))
