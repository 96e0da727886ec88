"""A/B routing over HTTP: weights, sticky keys, explicit versions, the admin routing API."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from gateway.config import Settings
from tests import onnx_models
from tests.conftest import RunningGateway, start_gateway, stop_gateway

pytestmark = pytest.mark.integration

TOKEN = "routing-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROW = {"a": [1, 1, 1, 1], "b": [1, 1, 1, 1]}


@pytest.fixture(scope="module")
def ab_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("ab")
    onnx_models.write_model(root, "pair", 1, onnx_models.scaled_sum(1.0))
    onnx_models.write_model(root, "pair", 2, onnx_models.scaled_sum(3.0))
    onnx_models.write_config(
        root,
        "pair",
        '[routing]\nweights = { "1" = 70, "2" = 30 }\nsticky_key = "x-user-id"\n',
    )
    running = start_gateway(Settings(model_repository=root, admin_token=TOKEN))
    yield running
    stop_gateway(running)


@pytest.fixture
def http(ab_gateway: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ab_gateway.url, timeout=30) as client:
        yield client


def _version(client: httpx.Client, path: str = "/v1/models/pair:predict", **headers: str) -> str:
    response = client.post(path, json={"instances": [ROW]}, headers=headers)
    assert response.status_code == 200, response.text
    value = response.json()["predictions"][0]["sum"][0]
    version = response.headers["x-model-version"]
    assert value == {"1": 2.0, "2": 6.0}[version]  # the answer is the named version's
    return version


def test_split_follows_the_weights(http: httpx.Client) -> None:
    counts = Counter(_version(http) for _ in range(2000))
    assert counts["1"] / 2000 == pytest.approx(0.7, abs=0.04)
    assert counts["2"] / 2000 == pytest.approx(0.3, abs=0.04)


def test_sticky_users_keep_their_version(http: httpx.Client) -> None:
    seen: dict[str, set[str]] = {}
    for user in range(60):
        for _ in range(5):
            seen.setdefault(str(user), set()).add(_version(http, **{"x-user-id": f"u{user}"}))
    assert all(len(versions) == 1 for versions in seen.values())
    assert {v for versions in seen.values() for v in versions} == {"1", "2"}


def test_an_explicit_version_bypasses_routing(http: httpx.Client) -> None:
    path = "/v1/models/pair/versions/2:predict"
    assert {_version(http, path, **{"x-user-id": f"u{i}"}) for i in range(20)} == {"2"}


def test_routing_api_reads_validates_and_applies(http: httpx.Client) -> None:
    current = http.get("/admin/models/pair/routing", headers=AUTH).json()
    assert current == {
        "model": "pair",
        "weights": {"1": 70.0, "2": 30.0},
        "sticky_key": "x-user-id",
        "generation": current["generation"],  # what earlier tests changed
    }
    for bad, message in [
        ({"weights": {"1": 50, "9": 50}}, "version 9 is not loaded"),
        ({"weights": {"1": -5}}, "greater than or equal to 0"),
        ({"weights": {"1": 0, "2": 0}}, "positive sum"),
        ({"weights": {"1": 1}, "shadow": {"version": 1}}, "a shadow must be a different version"),
        ({"weights": {"1": 1}, "shadow": {"version": 7}}, "shadow version 7 is not loaded"),
        ("everything to 2", "routing must be a JSON object"),
    ]:
        response = http.put("/admin/models/pair/routing", headers=AUTH, json=bad)
        assert response.status_code == 400, response.text
        assert message in response.json()["error"]
    assert http.get("/admin/models/pair/routing", headers=AUTH).json() == current
    try:
        applied = http.put(
            "/admin/models/pair/routing", headers=AUTH, json={"weights": {"1": 0, "2": 1}}
        )
        assert applied.status_code == 200 and applied.json()["weights"] == {"1": 0.0, "2": 1.0}
        assert {_version(http) for _ in range(50)} == {"2"}
        by_input = http.put(
            "/admin/models/pair/routing",
            headers=AUTH,
            json={"weights": {"1": 1, "2": 1}, "sticky_key": "a"},
        )
        assert by_input.status_code == 200
        for first in range(1, 30):
            row = {"a": [first, 0, 0, 0], "b": [0, 0, 0, 0]}
            versions = {
                http.post("/v1/models/pair:predict", json={"instances": [row]}).headers[
                    "x-model-version"
                ]
                for _ in range(4)
            }
            assert len(versions) == 1  # sticky by the value of input 'a'
    finally:  # back to model.toml's routing
        reset = http.delete("/admin/models/pair/routing", headers=AUTH)
        assert reset.json()["weights"] == current["weights"]


def test_routing_api_needs_the_token_and_a_known_model(http: httpx.Client) -> None:
    assert http.get("/admin/models/pair/routing").status_code == 401
    assert http.put("/admin/models/pair/routing", json={}).status_code == 401
    missing = http.get("/admin/models/nope/routing", headers=AUTH)
    assert missing.status_code == 404 and "unknown model 'nope'" in missing.json()["error"]
