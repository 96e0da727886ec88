"""Every error row of SPEC section 2, over HTTP: status, JSON body, and a useful message."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest

from tests.conftest import SERVER_MAX_BODY, RunningGateway

pytestmark = pytest.mark.integration


def _pixels(
    shape: list[int], datatype: str = "FP32", count: int | None = None
) -> dict[str, object]:
    size = count if count is not None else int(np.prod(shape))
    return {"name": "pixels", "shape": shape, "datatype": datatype, "data": [1] * size}


def _v2(
    client: httpx.Client, body: object, path: str = "/v2/models/digits/infer"
) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(path, content=content)


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    message = body["error"]
    assert isinstance(message, str), body
    return message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"inputs": [', "request body is not valid JSON"),
        (
            {"inputs": [_pixels([1, 64]), {**_pixels([1, 64]), "name": "extra"}]},
            "unknown input 'extra'; the model's inputs are 'pixels'",
        ),
        ({"inputs": [{**_pixels([1, 64]), "name": "pixel"}]}, "unknown input 'pixel'"),
        (
            {"inputs": [_pixels([1, 64], "INT64")]},
            "input 'pixels': expected datatype FP32, got INT64",
        ),
        (
            {"inputs": [_pixels([1, 63])]},
            "input 'pixels': expected shape [-1, 64] (-1 = any size), got [1, 63]",
        ),
        ({"inputs": [_pixels([64])]}, "expected shape [-1, 64] (-1 = any size), got [64]"),
        (
            {"inputs": [_pixels([1, 64], count=60)]},
            "input 'pixels': shape [1, 64] holds 64 elements, but 'data' has 60",
        ),
        (
            {"inputs": [_pixels([1, 64])], "outputs": [{"name": "labels"}]},
            "unknown output 'labels'; the model's outputs are 'probabilities'",
        ),
    ],
)
def test_v2_bad_requests(client: httpx.Client, body: object, message: str) -> None:
    assert message in _error(_v2(client, body), 400)


def test_v2_missing_input(client: httpx.Client) -> None:
    body = {"inputs": [{"name": "a", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    message = _error(_v2(client, body, "/v2/models/pair/infer"), 400)
    assert (
        message == "missing input(s) 'b'; the model needs 'a' (FP32 [-1, 4]), 'b' (INT64 [-1, 4])"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[[0, 1]", "request body is not valid JSON"),
        (
            orjson.dumps({"instances": [[0] * 63]}),
            "input 'pixels': expected shape [-1, 64] (-1 = any size), got [1, 63]",
        ),
        (orjson.dumps({"instances": [{"pixel": [0] * 64}]}), "unknown input(s) 'pixel'"),
        (orjson.dumps({"instances": [["a"] * 64]}), "expected FP32 values, got strings"),
        (orjson.dumps({"instance": [[0] * 64]}), "unknown key(s) 'instance'"),
    ],
)
def test_v1_bad_requests(client: httpx.Client, body: bytes, message: str) -> None:
    assert message in _error(client.post("/v1/models/digits:predict", content=body), 400)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v2/models/nope/infer", "unknown model 'nope'; models in the repository: "),
        ("/v2/models/digits/versions/5/infer", "has no version 5; loaded versions: 1, 2"),
        ("/v2/models/digits/versions/latest/infer", "versions are positive integers"),
        ("/v1/models/nope:predict", "unknown model 'nope'"),
        ("/v1/models/digits/versions/5:predict", "has no version 5"),
    ],
)
def test_unknown_model_or_version(client: httpx.Client, path: str, message: str) -> None:
    assert message in _error(client.post(path, content=b"{}"), 404)


def test_body_over_the_limit(client: httpx.Client) -> None:
    big = b"0" * (SERVER_MAX_BODY + 1)
    message = _error(client.post("/v2/models/digits/infer", content=big), 413)
    assert f"limited to {SERVER_MAX_BODY} bytes (--max-body-bytes)" in message

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        for _ in range(5):
            yield b"0" * (SERVER_MAX_BODY // 4)

    message = _error(client.post("/v1/models/digits:predict", content=chunks()), 413)
    assert "the body is larger" in message


def test_decompressed_body_over_the_limit(client: httpx.Client) -> None:
    import zlib

    bomb = zlib.compress(b"0" * (SERVER_MAX_BODY * 2))
    response = client.post(
        "/v2/models/digits/infer", content=bomb, headers={"Content-Encoding": "deflate"}
    )
    assert "decompresses to more" in _error(response, 413)
    response = client.post(
        "/v2/models/digits/infer", content=b"{}", headers={"Content-Encoding": "br"}
    )
    assert "Content-Encoding 'br' is not supported" in _error(response, 400)


def test_not_ready_model(client: httpx.Client) -> None:
    message = _error(client.post("/v2/models/broken/infer", content=b"{}"), 503)
    assert "model 'broken' has no loaded version" in message
    assert "protobuf parsing failed" in message


def test_runtime_failure_is_a_clean_error(client: httpx.Client) -> None:
    body = {"inputs": [{"name": "index", "shape": [2], "datatype": "INT64", "data": [1, 99]}]}
    response = _v2(client, body, "/v2/models/lookup/infer")
    message = _error(response, 400)
    assert message.startswith("the model rejected the inputs:")
    assert "Traceback" not in message
    ok = _v2(client, {"inputs": [{**body["inputs"][0], "data": [0, 3]}]}, "/v2/models/lookup/infer")
    assert ok.json()["outputs"][0]["data"] == [10.0, 40.0]


def _slow_body(rows: int, timeout_ms: float | None = None) -> tuple[bytes, int]:
    """The binary request and the length of its JSON header."""
    x = np.ones((rows, 16), np.float32)
    header: dict[str, object] = {
        "inputs": [
            {
                "name": "x",
                "shape": [rows, 16],
                "datatype": "FP32",
                "parameters": {"binary_data_size": x.nbytes},
            }
        ]
    }
    if timeout_ms is not None:
        header["parameters"] = {"timeout_ms": timeout_ms}
    head = orjson.dumps(header)
    return head + x.tobytes(), len(head)


def _post_slow(
    gateway: RunningGateway, rows: int, timeout_ms: float | None = None
) -> httpx.Response:
    body, length = _slow_body(rows, timeout_ms)
    return httpx.post(
        f"{gateway.url}/v2/models/slow/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(length)},
        timeout=60,
    )


def _in_background(
    gateway: RunningGateway, rows: int, results: list[httpx.Response]
) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(_post_slow(gateway, rows)))
    thread.start()
    return thread


def _wait_until_busy(client: httpx.Client) -> None:
    """Poll until the slow model is running a request (bounded: about 5 s)."""
    for _ in range(500):
        probe = _slow_body(1, timeout_ms=1)
        response = client.post(
            "/v2/models/slow/infer",
            content=probe[0],
            headers={"Inference-Header-Content-Length": str(probe[1])},
        )
        if response.status_code != 200:
            return
    raise AssertionError("the slow model never looked busy")


def test_deadline_exceeded(gateway: RunningGateway, client: httpx.Client) -> None:
    results: list[httpx.Response] = []
    thread = _in_background(gateway, 1500, results)
    try:
        _wait_until_busy(client)
        response = _post_slow(gateway, 1, timeout_ms=5)
        message = _error(response, 504)
        assert "waited 5 ms (its timeout_ms)" in message
        assert response.headers["x-model-version"] == "1"
    finally:
        thread.join(timeout=60)
    assert results[0].status_code == 200


def test_queue_full(gateway: RunningGateway) -> None:
    results: list[httpx.Response] = []
    threads = [_in_background(gateway, 300, results) for _ in range(8)]
    for thread in threads:
        thread.join(timeout=120)
    codes = Counter(r.status_code for r in results)
    assert set(codes) <= {200, 429} and codes[429] >= 1 and codes[200] >= 1, codes
    rejected = next(r for r in results if r.status_code == 429)
    assert rejected.headers["retry-after"] == "1"
    assert "max_queue_size = 2" in _error(rejected, 429)


def test_server_side_failures_are_logged_with_the_request_id(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.http")
    response = client.post(
        "/v2/models/broken/infer", content=b"{}", headers={"x-request-id": "warn-me-1"}
    )
    assert response.status_code == 503
    assert response.headers["x-request-id"] == "warn-me-1"
    # a caller's own mistake (4xx) is not the operator's warning
    response = client.post(
        "/v2/models/digits/infer", content=b"{", headers={"x-request-id": "quiet-1"}
    )
    assert response.status_code == 400
    records = [r for r in caplog.records if getattr(r, "request_id", None) == "warn-me-1"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert "warn-me-1" in records[0].getMessage()
    assert getattr(records[0], "status", None) == 503
    assert not [r for r in caplog.records if getattr(r, "request_id", None) == "quiet-1"]
