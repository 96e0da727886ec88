"""Hot swap and repository control over HTTP, under load, with real files."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.config import Settings
from tests import onnx_models
from tests.background_load import BackgroundLoad, wait_for
from tests.conftest import RunningGateway, start_gateway, stop_gateway

pytestmark = pytest.mark.integration

TOKEN = "test-admin-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BODY = {"instances": [{"a": [1, 1, 1, 1], "b": [1, 1, 1, 1]}]}  # sum = 2 * scale


@pytest.fixture
def swap_gateway(tmp_path: Path) -> Iterator[RunningGateway]:
    onnx_models.write_model(tmp_path, "pair", 1, onnx_models.scaled_sum(1.0))
    onnx_models.write_model(tmp_path, "fixed", 1, onnx_models.fixed_shape())
    running = start_gateway(
        Settings(model_repository=tmp_path, admin_token=TOKEN, poll_interval=0.1)
    )
    yield running
    stop_gateway(running)


def _pair_sum(client: httpx.Client) -> tuple[int, str, float]:
    """One v1 request to 'pair': status, answering version, and the sum (nan on error)."""
    response = client.post("/v1/models/pair:predict", json=BODY)
    value = (
        response.json()["predictions"][0]["sum"][0] if response.status_code == 200 else float("nan")
    )
    return response.status_code, response.headers.get("x-model-version", ""), value


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    wait_for(predicate, timeout_s)


def _serving(gateway: RunningGateway, version: str) -> bool:
    response = httpx.post(f"{gateway.url}/v1/models/pair:predict", json=BODY, timeout=10)
    answered: str | None = response.headers.get("x-model-version")
    return answered == version


def test_hot_swap_under_load_fails_no_request(swap_gateway: RunningGateway) -> None:
    root = swap_gateway.repository
    scale = {"1": 1.0, "2": 3.0, "3": 5.0}
    with BackgroundLoad(swap_gateway.url, _pair_sum, clients=8) as load:
        time.sleep(0.5)
        onnx_models.write_model(root, "pair", 2, onnx_models.scaled_sum(scale["2"]))
        _wait_for(lambda: _serving(swap_gateway, "2"))
        time.sleep(0.5)
        # publish safely: write elsewhere, then rename into the repository
        staging = root.parent / "staging-3"
        onnx_models.write_model(staging, "pair", 3, onnx_models.scaled_sum(scale["3"]))
        (staging / "pair" / "3").rename(root / "pair" / "3")
        _wait_for(lambda: _serving(swap_gateway, "3"))
        shutil.rmtree(root / "pair" / "1")
        shutil.rmtree(root / "pair" / "2")
        time.sleep(0.5)
    codes = Counter(code for code, _, _ in load.results)
    print(f"hot swap under load: {len(load.results)} requests, {dict(codes)}")
    versions = Counter(version for _, version, _ in load.results)
    assert len(load.results) > 100
    assert codes == {200: len(load.results)}, codes
    assert {"1", "2", "3"} <= set(versions), versions
    for _, version, value in load.results:
        assert value == 2 * scale[version]  # each answer is the version its header names


def test_bad_files_under_load_leave_serving_alone(swap_gateway: RunningGateway) -> None:
    root = swap_gateway.repository
    with BackgroundLoad(swap_gateway.url, _pair_sum, clients=4) as load:
        (root / "pair" / "2").mkdir()
        (root / "pair" / "2" / "model.onnx").write_bytes(b"not a model")
        onnx_models.write_config(root, "pair", '[batching]\nmax_batch_size = "many"\n')

        def reported() -> bool:
            index = httpx.post(f"{swap_gateway.url}/v2/repository/index", headers=AUTH).json()
            return any("max_batch_size" in row["reason"] for row in index)

        _wait_for(reported)
        time.sleep(0.3)
    assert {code for code, _, _ in load.results} == {200}
    assert {version for _, version, _ in load.results} == {"1"}
    onnx_models.write_config(root, "pair", '[model]\nversions = "all"\n')
    _wait_for(
        lambda: any(
            row.get("version") == "2" and "protobuf" in row["reason"]
            for row in httpx.post(f"{swap_gateway.url}/v2/repository/index", headers=AUTH).json()
        )
    )


def test_repository_load_and_unload(swap_gateway: RunningGateway) -> None:
    url = swap_gateway.url
    index = httpx.post(f"{url}/v2/repository/index", headers=AUTH).json()
    assert {"name": "fixed", "version": "1", "state": "READY", "reason": ""} in index
    unloaded = httpx.post(f"{url}/v2/repository/models/fixed/unload", headers=AUTH).json()
    assert unloaded == {"name": "fixed", "unloaded": True, "generation": 1}
    assert httpx.get(f"{url}/v2/models/fixed/ready").status_code == 503
    ready = httpx.post(f"{url}/v2/repository/index", headers=AUTH, json={"ready": True}).json()
    assert [row["name"] for row in ready] == ["pair"]
    loaded = httpx.post(f"{url}/v2/repository/models/fixed/load", headers=AUTH)
    assert loaded.status_code == 200 and loaded.json()["versions"] == ["1"]
    assert httpx.get(f"{url}/v2/models/fixed/ready").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/v2/repository/index",
        "/v2/repository/models/pair/load",
        "/v2/repository/models/pair/unload",
    ],
)
def test_admin_token_is_required(swap_gateway: RunningGateway, path: str) -> None:
    url = swap_gateway.url + path
    missing = httpx.post(url)
    assert missing.status_code == 401 and "admin token" in missing.json()["error"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(url, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    basic = httpx.post(url, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    assert httpx.post(url, headers=AUTH).status_code == 200


def test_admin_endpoints_are_off_without_a_token(gateway: RunningGateway) -> None:
    response = httpx.post(f"{gateway.url}/v2/repository/index", headers=AUTH)
    assert response.status_code == 403
    assert "--admin-token" in response.json()["error"]


@pytest.mark.parametrize(
    "name", ["..", "%2e%2e", "%2E%2E", ".", "a%2Fb", "..%2F..%2Fetc", "%2Fetc%2Fpasswd", "nope"]
)
def test_no_request_reaches_outside_the_repository(swap_gateway: RunningGateway, name: str) -> None:
    response = httpx.post(f"{swap_gateway.url}/v2/repository/models/{name}/load", headers=AUTH)
    assert response.status_code == 404, response.text
    assert "error" in response.json()
    for traversal in ("/v2/repository/models/../../etc/load", "/v2/repository/models//etc/load"):
        assert httpx.post(swap_gateway.url + traversal, headers=AUTH).status_code == 404
