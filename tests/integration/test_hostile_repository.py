"""Promises a hostile or careless repository, and admin caller, cannot break (SPEC 1, 4, 6, 10).

Each test is one promise, stated in its docstring. Every test runs its own gateway
on its own repository in ``tmp_path``, watched every 0.2 s, on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.config import Settings
from tests import onnx_models
from tests.background_load import BackgroundLoad, wait_for
from tests.conftest import RunningGateway, metric_value, start_gateway, stop_gateway

pytestmark = pytest.mark.integration

TOKEN = "hostile-repository-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROW = {"a": [1, 1, 1, 1], "b": [1, 1, 1, 1]}  # sum = 2 * scale
SCALES = {"1": 1.0, "2": 3.0, "3": 5.0}
MIB = 1024 * 1024


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    onnx_models.write_model(root, "pair", 1, onnx_models.scaled_sum(SCALES["1"]))
    return root


def _start(root: Path) -> RunningGateway:
    return start_gateway(Settings(model_repository=root, admin_token=TOKEN, poll_interval=0.2))


@pytest.fixture
def gateway(repository: Path) -> Iterator[RunningGateway]:
    running = _start(repository)
    yield running
    stop_gateway(running)


@pytest.fixture
def http(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


@pytest.fixture
def repository_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="gateway.repository")
    return caplog


def _predict(client: httpx.Client, path: str = "/v1/models/pair:predict") -> httpx.Response:
    return client.post(path, json={"instances": [ROW]})


def _served_version(client: httpx.Client) -> str:
    response = _predict(client)
    assert response.status_code == 200, response.text
    version = response.headers["x-model-version"]
    assert response.json()["predictions"][0]["sum"][0] == 2 * SCALES[version]
    return version


def _index(client: httpx.Client) -> list[dict[str, str]]:
    response = client.post("/v2/repository/index", headers=AUTH)
    assert response.status_code == 200, response.text
    rows: list[dict[str, str]] = response.json()
    return rows


def _row(client: httpx.Client, model: str, version: str | None) -> dict[str, str] | None:
    for row in _index(client):
        if row["name"] == model and row.get("version") == version:
            return row
    return None


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    wait_for(predicate, timeout_s)


def _failed_loads(client: httpx.Client, model: str, version: str) -> float:
    text = client.get("/metrics").text
    return metric_value(
        text, "gateway_model_loads_total", model=model, version=version, outcome="failed"
    )


def _logged(caplog: pytest.LogCaptureFixture, *parts: str) -> bool:
    return any(
        record.levelno >= logging.WARNING and all(p in record.getMessage() for p in parts)
        for record in caplog.records
    )


def _corrupt_version(root: Path, model: str, version: int) -> None:
    """Published the safe way (written aside, then renamed in), so the test does not
    depend on the watcher's settle rule."""
    staging = root.parent / f"staging-{model}-{version}"
    (staging / str(version)).mkdir(parents=True)
    (staging / str(version) / "model.onnx").write_bytes(b"\x08\x07 this is not an onnx model")
    (staging / str(version)).rename(root / model / str(version))


def _routed(client: httpx.Client) -> tuple[int, str]:
    response = _predict(client)
    return response.status_code, response.headers.get("x-model-version", "")


# -- a new version or config that fails leaves the previous state serving -------------


def test_a_corrupt_new_version_leaves_the_previous_version_serving(
    gateway: RunningGateway, http: httpx.Client, repository_log: pytest.LogCaptureFixture
) -> None:
    """With the default policy ("latest"), a new version whose model.onnx does not load
    is skipped: version 1 serves on, and the failure is in the log, the metric and the
    repository index."""
    _corrupt_version(gateway.repository, "pair", 2)
    _wait_for(lambda: _row(http, "pair", "2") is not None)
    row = _row(http, "pair", "2")
    assert row is not None and row["state"] == "UNAVAILABLE"
    assert "onnxruntime cannot load it" in row["reason"]
    assert _row(http, "pair", "1") == {
        "name": "pair",
        "version": "1",
        "state": "READY",
        "reason": "",
    }
    assert {_served_version(http) for _ in range(20)} == {"1"}
    pinned = _predict(http, "/v1/models/pair/versions/2:predict")
    assert pinned.status_code == 503
    assert "version 2 of model 'pair' is not ready" in pinned.json()["error"]
    assert _failed_loads(http, "pair", "2") == 1.0
    assert _logged(repository_log, "model pair version 2 failed to load")
    # a good version 2 then replaces version 1, as usual
    (gateway.repository / "pair" / "2" / "model.onnx").unlink()
    onnx_models.write_model(gateway.repository, "pair", 2, onnx_models.scaled_sum(SCALES["2"]))
    _wait_for(lambda: _served_version(http) == "2")


def test_corrupt_version_and_bad_model_toml_while_requests_flow(
    gateway: RunningGateway, http: httpx.Client, repository_log: pytest.LogCaptureFixture
) -> None:
    """A corrupt new version, then a model.toml that does not validate, then one whose
    [routing] names a version that does not exist, all dropped in while requests flow:
    not one request fails, version 1 answers them all, and each problem is reported
    (log line, gateway_model_loads_total{outcome="failed"}, index reason)."""
    root = gateway.repository
    with BackgroundLoad(gateway.url, _routed) as traffic:
        time.sleep(0.3)
        _corrupt_version(root, "pair", 2)
        _wait_for(lambda: _row(http, "pair", "2") is not None)
        onnx_models.write_config(root, "pair", '[batching]\nmax_batch_size = "many"\n')
        _wait_for(lambda: "max_batch_size" in (_row(http, "pair", "1") or {}).get("reason", ""))
        onnx_models.write_config(root, "pair", '[routing]\nweights = { "1" = 50, "7" = 50 }\n')
        _wait_for(lambda: "version(s) 7" in (_row(http, "pair", "1") or {}).get("reason", ""))
        time.sleep(0.5)
    codes = Counter(code for code, _ in traffic.results)
    assert len(traffic.results) > 20, codes
    assert codes == {200: len(traffic.results)}, codes
    assert {version for _, version in traffic.results} == {"1"}
    row = _row(http, "pair", "1")
    assert row is not None and row["state"] == "READY"
    assert "[routing] names version(s) 7 that are not in the repository" in row["reason"]
    assert "previous config still serving" in row["reason"]
    assert _failed_loads(http, "pair", "2") >= 1.0
    assert _failed_loads(http, "pair", "") >= 2.0  # the two model.toml problems
    assert _logged(repository_log, "model pair version 2 failed to load")
    assert _logged(
        repository_log, "max_batch_size", "previous config and versions (1) keep serving"
    )
    assert _logged(repository_log, "names version(s) 7")


def test_routing_that_names_a_missing_version_keeps_the_previous_routing(
    tmp_path: Path, repository_log: pytest.LogCaptureFixture
) -> None:
    """A changed model.toml whose [routing] names a version that does not exist does not
    move traffic to the highest version: the previous split keeps serving, GET routing
    still shows it, and the problem is reported."""
    root = tmp_path / "repository"
    onnx_models.write_model(root, "pair", 1, onnx_models.scaled_sum(SCALES["1"]))
    onnx_models.write_model(root, "pair", 2, onnx_models.scaled_sum(SCALES["2"]))
    onnx_models.write_config(root, "pair", '[routing]\nweights = { "1" = 100, "2" = 0 }\n')
    running = _start(root)
    try:
        with httpx.Client(base_url=running.url, timeout=30) as http:
            assert {_served_version(http) for _ in range(20)} == {"1"}
            onnx_models.write_config(root, "pair", '[routing]\nweights = { "1" = 100, "9" = 1 }\n')
            _wait_for(lambda: "version(s) 9" in (_row(http, "pair", "2") or {}).get("reason", ""))
            assert {_served_version(http) for _ in range(40)} == {"1"}
            routing = http.get("/admin/models/pair/routing", headers=AUTH).json()
            assert routing == {"model": "pair", "weights": {"1": 100.0, "2": 0.0}, "generation": 0}
            assert _failed_loads(http, "pair", "") == 1.0
            assert _logged(repository_log, "model pair", "names version(s) 9")
    finally:
        stop_gateway(running)


def test_routing_with_a_bad_sticky_key_in_model_toml_keeps_the_previous_routing(
    tmp_path: Path, repository_log: pytest.LogCaptureFixture
) -> None:
    """A model.toml [routing] is validated like a PUT: a sticky_key that is neither an
    input nor an ASCII header name is reported and the previous routing serves on."""
    root = tmp_path / "repository"
    onnx_models.write_model(root, "pair", 1, onnx_models.scaled_sum(SCALES["1"]))
    onnx_models.write_model(root, "pair", 2, onnx_models.scaled_sum(SCALES["2"]))
    onnx_models.write_config(root, "pair", '[routing]\nweights = { "1" = 1 }\n')
    running = _start(root)
    try:
        with httpx.Client(base_url=running.url, timeout=30) as http:
            onnx_models.write_config(
                root, "pair", '[routing]\nweights = { "2" = 1 }\nsticky_key = "ключ"\n'
            )
            _wait_for(lambda: "sticky_key" in (_row(http, "pair", "1") or {}).get("reason", ""))
            assert {_served_version(http) for _ in range(20)} == {"1"}
            reason = (_row(http, "pair", "1") or {})["reason"]
            assert "is neither an input of the model" in reason
            assert _logged(repository_log, "model pair", "sticky_key")
    finally:
        stop_gateway(running)


# -- symlinks out of the repository ------------------------------------------------------


def test_symlinks_out_of_the_repository_are_not_followed(
    tmp_path: Path, repository_log: pytest.LogCaptureFixture
) -> None:
    """A model directory, version directory, model.onnx or model.toml that is a symlink
    resolving outside the repository is not loaded (nor read): each is reported like a
    failed load. Symlinks that stay inside the repository work."""
    root = tmp_path / "repository"
    outside = tmp_path / "outside"
    onnx_models.write_model(outside, "elsewhere", 1, onnx_models.scaled_sum(SCALES["3"]))
    onnx_models.write_config(outside, "elsewhere", "[batching]\nmax_batch_size = 4\n")
    onnx_models.write_model(root, "pair", 1, onnx_models.scaled_sum(SCALES["1"]))
    os.symlink(outside / "elsewhere", root / "linkedmodel")  # a model directory
    onnx_models.write_model(root, "linkedversion", 1, onnx_models.scaled_sum(SCALES["1"]))
    os.symlink(outside / "elsewhere" / "1", root / "linkedversion" / "2")  # a version dir
    (root / "linkedfile" / "1").mkdir(parents=True)
    os.symlink(outside / "elsewhere" / "1" / "model.onnx", root / "linkedfile" / "1" / "model.onnx")
    onnx_models.write_model(root, "linkedtoml", 1, onnx_models.scaled_sum(SCALES["1"]))
    os.symlink(outside / "elsewhere" / "model.toml", root / "linkedtoml" / "model.toml")
    os.symlink(root / "pair", root / "inside")  # inside the repository: fine
    running = _start(root)
    try:
        with httpx.Client(base_url=running.url, timeout=30) as http:
            for model, version in [
                ("linkedmodel", None),
                ("linkedversion", "2"),
                ("linkedfile", "1"),
                ("linkedtoml", None),
            ]:
                row = _row(http, model, version)
                assert row is not None and row["state"] == "UNAVAILABLE", (model, row)
                assert "outside the model repository" in row["reason"], row
                assert "not followed" in row["reason"]
                assert _failed_loads(http, model, version or "") == 1.0, model
                assert _logged(repository_log, f"model {model}", "outside the model repository")
            # the rest of those models, and the inside link, serve
            assert _served_version(http) == "1"
            for path in ["/v1/models/inside:predict", "/v1/models/linkedversion:predict"]:
                response = http.post(path, json={"instances": [ROW]})
                assert response.status_code == 200, response.text
                assert response.json()["predictions"][0]["sum"][0] == 2.0
            refused = http.post("/v1/models/linkedmodel:predict", json={"instances": [ROW]})
            assert refused.status_code == 503
            assert "outside the model repository" in refused.json()["error"]
    finally:
        stop_gateway(running)


def test_a_symlinked_version_appearing_later_leaves_the_serving_version_alone(
    gateway: RunningGateway, http: httpx.Client, tmp_path: Path
) -> None:
    """A version directory symlinked from outside, added while version 1 serves, is
    refused like a corrupt version: version 1 serves on."""
    outside = tmp_path / "outside"
    onnx_models.write_model(outside, "pair", 2, onnx_models.scaled_sum(SCALES["2"]))
    os.symlink(outside / "pair" / "2", gateway.repository / "pair" / "2")
    _wait_for(lambda: _row(http, "pair", "2") is not None)
    assert "outside the model repository" in (_row(http, "pair", "2") or {})["reason"]
    assert {_served_version(http) for _ in range(20)} == {"1"}
    assert _failed_loads(http, "pair", "2") == 1.0


# -- the admin routing API validates completely before it applies ----------------------


@pytest.fixture
def ab_repository(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    onnx_models.write_model(root, "pair", 1, onnx_models.scaled_sum(SCALES["1"]))
    onnx_models.write_model(root, "pair", 2, onnx_models.scaled_sum(SCALES["2"]))
    onnx_models.write_config(root, "pair", '[model]\nversions = "all"\n')
    return root


@pytest.fixture
def ab(ab_repository: Path) -> Iterator[httpx.Client]:
    running = _start(ab_repository)
    try:
        with httpx.Client(base_url=running.url, timeout=30) as client:
            yield client
    finally:
        stop_gateway(running)


def _put_routing(client: httpx.Client, body: object) -> httpx.Response:
    return client.put("/admin/models/pair/routing", headers=AUTH, json=body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"weights": {}}, "weights is empty; name at least one version"),
        ({}, 'routing must name "weights"'),
        ({"weights": {"1": 0, "2": 0}}, "weights must have a positive sum"),
        ({"weights": {"1": -1, "2": 2}}, "greater than or equal to 0"),
        ({"weights": {"1": "10"}}, "weights.1: Input should be a valid number"),
        ({"weights": {"1" * 19: 1}}, "at most 18 digits"),
        ({"weights": {"1": 1}, "sticky_key": "ключ"}, "sticky_key 'ключ' is neither an input"),
        ({"weights": {"1": 1}, "sticky_key": "x user"}, "nor an HTTP header name"),
        ({"weights": {"1": 1}, "sticky_key": ""}, "sticky_key: String should have at least 1"),
        ({"weights": {"1": 1, "3": 1}}, "version 3 is not loaded"),
    ],
)
def test_invalid_routing_is_refused_and_changes_nothing(
    ab: httpx.Client, body: object, message: str
) -> None:
    """A routing PUT is validated completely before it applies: 400 that says why, and
    the routing in force is unchanged."""
    before = ab.get("/admin/models/pair/routing", headers=AUTH).json()
    response = _put_routing(ab, body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"], response.json()
    assert ab.get("/admin/models/pair/routing", headers=AUTH).json() == before
    assert _predict(ab).status_code == 200


def test_infinite_weights_are_refused(ab: httpx.Client) -> None:
    """A weight that is not a finite number (1e400 overflows to infinity) is a 400."""
    response = ab.put(
        "/admin/models/pair/routing",
        headers={**AUTH, "content-type": "application/json"},
        content=b'{"weights": {"1": 1e400, "2": 1}}',
    )
    assert response.status_code == 400, response.text
    assert "not valid JSON" in response.json()["error"]
    assert "infinity" in response.json()["error"]


def test_get_returns_the_weights_as_they_were_put(ab: httpx.Client) -> None:
    """GET after PUT shows the weights as they were PUT, zeros included, and a zero
    weight takes no traffic."""
    response = _put_routing(ab, {"weights": {"1": 0, "2": 100}})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert {k: answer[k] for k in ("model", "weights")} == {
        "model": "pair",
        "weights": {"1": 0, "2": 100},
    }
    assert ab.get("/admin/models/pair/routing", headers=AUTH).json() == answer
    assert {_served_version(ab) for _ in range(30)} == {"2"}


def test_huge_weights_split_by_their_ratio(ab: httpx.Client) -> None:
    """Weights 1e308 and 1e308 (their float sum overflows) split traffic evenly
    instead of sending all of it to one version."""
    response = _put_routing(ab, {"weights": {"1": 1e308, "2": 1e308}})
    assert response.status_code == 200, response.text
    assert response.json()["weights"] == {"1": 1e308, "2": 1e308}
    counts = Counter(_served_version(ab) for _ in range(200))
    assert 40 <= counts["1"] <= 160 and counts["1"] + counts["2"] == 200, counts


def test_sticky_key_may_be_a_header_or_an_input(ab: httpx.Client) -> None:
    """A sticky_key that is an ASCII header token (any case) or an input name applies;
    requests keep being answered."""
    for key, stored in [("X-User-Id", "x-user-id"), ("a", "a")]:
        response = _put_routing(ab, {"weights": {"1": 1, "2": 1}, "sticky_key": key})
        assert response.status_code == 200, response.text
        assert response.json()["sticky_key"] == stored
        for user in range(10):
            answers = {
                ab.post(
                    "/v1/models/pair:predict",
                    json={"instances": [ROW]},
                    headers={"x-user-id": f"u{user}"},
                ).status_code
                for _ in range(2)
            }
            assert answers == {200}


# -- admin bodies are small JSON ---------------------------------------------------------


def _raw_exchange(port: int, head: bytes, body_chunks: list[bytes]) -> tuple[int, bytes]:
    """Send a request over a raw socket and read the answer's status and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server may answer, and stop reading, before everything is sent
        received = b""
        deadline = time.monotonic() + 20
        while b"\r\n\r\n" not in received and time.monotonic() < deadline:
            part = sock.recv(65536)
            if not part:
                break
            received += part
        head_part, _, rest = received.partition(b"\r\n\r\n")
        length = 0
        for line in head_part.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length and time.monotonic() < deadline:
            part = sock.recv(65536)
            if not part:
                break
            rest += part
    return int(head_part.split(b" ")[1]), rest


@pytest.mark.parametrize(
    "path",
    ["/admin/models/pair/routing", "/v2/repository/index", "/v2/repository/models/pair/load"],
)
def test_a_large_declared_admin_body_is_refused_unread(gateway: RunningGateway, path: str) -> None:
    """An admin body whose Content-Length is over 1 MiB is answered 413 (JSON) before any
    of it is read; other callers are served as before."""
    method = b"PUT" if "routing" in path else b"POST"
    head = (
        method + b" " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(48 * MIB).encode() + b"\r\n\r\n"
    )
    status, body = _raw_exchange(gateway.port, head, [b"{" + b" " * 1000])
    assert status == 413
    assert b"admin request bodies are limited to 1048576 bytes" in body
    assert b"Content-Length is 50331648" in body
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        assert _served_version(client) == "1"


def test_a_large_chunked_admin_body_is_refused_while_it_streams(gateway: RunningGateway) -> None:
    """A chunked admin body is counted as it arrives: past 1 MiB it is answered 413."""
    head = (
        b"PUT /admin/models/pair/routing HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = b" " * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    status, body = _raw_exchange(gateway.port, head, [chunk] * 20)  # 1.25 MiB, never ended
    assert status == 413
    assert b"admin request bodies are limited to 1048576 bytes, but the body is larger" in body
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        assert _served_version(client) == "1"


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        ("PUT", "/admin/models/pair/routing", b'{"weights": ', "not valid JSON"),
        ("PUT", "/admin/models/pair/routing", b"\xff\xfe{}", "not valid JSON"),
        ("PUT", "/admin/models/pair/routing", b"[" * 5000, "not valid JSON"),
        ("PUT", "/admin/models/pair/routing", b"", "needs a JSON body"),
        ("PUT", "/admin/models/pair/routing", b"null", "routing must be a JSON object"),
        ("POST", "/v2/repository/index", b"{nope}", "not valid JSON"),
        ("POST", "/v2/repository/index", b'{"ready": "yes"}', 'body must be empty or {"ready"'),
        ("POST", "/v2/repository/models/pair/load", b"[1]", "body must be empty or a JSON object"),
        ("POST", "/v2/repository/models/pair/unload", b'{"a": ', "not valid JSON"),
    ],
)
def test_malformed_admin_json_is_a_400(
    http: httpx.Client, method: str, path: str, body: bytes, message: str
) -> None:
    """Admin JSON that does not parse, or is not the expected shape, is a 400 that says
    so, never a 500; the model keeps serving."""
    response = http.request(
        method, path, content=body, headers={**AUTH, "content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert _served_version(http) == "1"


# -- an unloaded model answers the same way, pinned or routed -------------------------


def test_an_unloaded_model_is_503_pinned_or_routed_and_404_for_missing_versions(
    http: httpx.Client,
) -> None:
    """After an unload, the routed path and a pinned existing version both answer 503
    saying how to load the model again; a version that does not exist is 404; a load
    brings both back."""
    assert http.post("/v2/repository/models/pair/unload", headers=AUTH).status_code == 200
    load_hint = "load it with POST /v2/repository/models/pair/load"
    for path in [
        "/v1/models/pair:predict",
        "/v1/models/pair/versions/1:predict",
        "/v2/models/pair/versions/1/infer",
        "/v2/models/pair/infer",
    ]:
        if path.startswith("/v2"):
            body = {
                "inputs": [
                    {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": ROW["a"]},
                    {"name": "b", "datatype": "INT64", "shape": [1, 4], "data": ROW["b"]},
                ]
            }
            response = http.post(path, json=body)
        else:
            response = _predict(http, path)
        assert response.status_code == 503, (path, response.text)
        assert "model 'pair' is unloaded" in response.json()["error"], path
        assert load_hint in response.json()["error"], path
    assert http.get("/v2/models/pair/versions/1/ready").status_code == 503
    missing = _predict(http, "/v1/models/pair/versions/9:predict")
    assert missing.status_code == 404
    assert "model 'pair' has no version 9" in missing.json()["error"]
    assert "versions in the repository: 1" in missing.json()["error"]
    assert _row(http, "pair", "1") == {
        "name": "pair",
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": "model 'pair' is unloaded (through POST /v2/repository/models/pair/unload); "
        + load_hint,
    }
    assert http.post("/v2/repository/models/pair/load", headers=AUTH).status_code == 200
    assert _predict(http, "/v1/models/pair/versions/1:predict").status_code == 200
    assert _served_version(http) == "1"
