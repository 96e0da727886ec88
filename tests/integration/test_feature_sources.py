"""Where a model's [features] come from (SPEC 5): the gateway's Redis or features file,
else the model's own [features] file; a model with neither does not load, and says how
to give it a store, while the models without [features] serve."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest

from gateway.config import Settings
from gateway.repository.registry import ModelRegistry, ServedModel
from gateway.service.feature_wiring import FeatureWiring, describe_source
from tests import onnx_models
from tests.conftest import EXAMPLES
from tests.gateway_process import serving

pytestmark = pytest.mark.integration

FEATURES = """[runtime]
intra_op_threads = 1

[features]
entity_input = "user_id"
key = "user:{user_id}"
fields = ["age", "account_age_days", "balance", "txn_count_7d", "avg_txn_amount", "chargebacks_90d"]
input = "features"
"""
HOW = ("--redis-url", "--features-file", '[features] file = "entities.csv"')


def feature_model(root: Path, name: str, extra: str = "") -> None:
    shutil.copytree(EXAMPLES / "fraud" / "1", root / name / "1")
    onnx_models.write_config(root, name, FEATURES + extra)


def plain_model(root: Path) -> None:
    onnx_models.write_model(root, "plain", 1, onnx_models.scaled_sum(1.0))


def load(root: Path, stores: FeatureWiring) -> dict[str, ServedModel]:
    async def go() -> dict[str, ServedModel]:
        registry = ModelRegistry(root, features=stores)
        try:
            return dict((await registry.load()).models)
        finally:
            await registry.aclose()

    return asyncio.run(go())


def test_a_model_without_a_feature_store_says_how_to_give_it_one(tmp_path: Path) -> None:
    """`gateway serve` with no --redis-url and no --features-file: the model with
    [features] fails to load (log line, repository index reason, 503 on infer), naming
    itself and the ways to give it a store; the model without [features] serves."""
    root = tmp_path / "models"
    feature_model(root, "needs")
    plain_model(root)
    log = tmp_path / "gateway.log"
    args = ["--model-repository", str(root)]
    with serving(args, log, env={"GATEWAY_ADMIN_TOKEN": "t0ken"}) as gateway:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            a = {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
            b = {"name": "b", "datatype": "INT64", "shape": [1, 4], "data": [0, 0, 0, 0]}
            assert http.post("/v2/models/plain/infer", json={"inputs": [a, b]}).status_code == 200
            ids = {"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["u0001"]}
            response = http.post("/v2/models/needs/infer", json={"inputs": [ids]})
            assert response.status_code == 503
            message = response.json()["error"]
            index = http.post("/v2/repository/index", headers={"Authorization": "Bearer t0ken"})
            reasons = [row.get("reason", "") for row in index.json() if row["name"] == "needs"]
    for text in (message, *reasons, log.read_text()):
        assert "model 'needs' has [features]" in text and "no feature store" in text, text
        assert all(how in text for how in HOW), text
    assert reasons and all(reasons)


def test_a_model_reads_its_own_features_file(tmp_path: Path) -> None:
    """[features] file = "entities.csv": the entities come from the model's directory,
    and only when the gateway has no store of its own."""
    root = tmp_path / "models"
    feature_model(root, "own", 'file = "entities.csv"\n')
    (root / "own" / "entities.csv").write_text("user_id,age,balance\nu1,50,12.5\n")
    served = load(root, FeatureWiring(required=True))["own"]
    assert served.ready and served.features is not None
    (row,) = asyncio.run(served.features.rows(["u1"]))
    assert row.found and row.vector[0] == 50 and row.vector[2] == 12.5


@pytest.mark.parametrize(
    ("name", "prepare", "expected"),
    [
        ("missing.csv", None, "expected a CSV or JSONL file of entities at"),
        ("folder", "directory", "found a directory"),
        ("outside.csv", "symlink", "outside the model's directory"),
        ("../entities.csv", None, 'no absolute path, no ".."'),
        ("/etc/passwd", None, 'no absolute path, no ".."'),
    ],
)
def test_a_features_file_that_is_not_there_fails_the_model(
    tmp_path: Path, name: str, prepare: str | None, expected: str
) -> None:
    root = tmp_path / "models"
    feature_model(root, "own", f'file = "{name}"\n')
    plain_model(root)
    if prepare == "directory":
        (root / "own" / name).mkdir()
    elif prepare == "symlink":
        secret = tmp_path / "secret.csv"
        secret.write_text("user_id,age\nu1,1\n")
        (root / "own" / name).symlink_to(secret)
    models = load(root, FeatureWiring(required=True))
    assert models["plain"].ready
    assert not models["own"].ready and expected in (models["own"].error or "")
    assert "model.toml" in (models["own"].error or "")


def test_models_check_does_not_need_a_store(tmp_path: Path) -> None:
    """`gateway models check` loads a model with [features] and no file (it serves
    nothing: Redis or a features file is the server's business)."""
    root = tmp_path / "models"
    feature_model(root, "needs")
    assert load(root, FeatureWiring())["needs"].ready


def test_blank_settings_mean_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """GATEWAY_FEATURES_FILE= and GATEWAY_REDIS_URL= (as `docker run -e` or compose write
    an emptied variable) unset them."""
    monkeypatch.setenv("GATEWAY_FEATURES_FILE", "")
    monkeypatch.setenv("GATEWAY_REDIS_URL", " ")
    settings = Settings()
    assert settings.features_file is None and settings.redis_url is None


def test_redis_wins_over_a_features_file() -> None:
    source = describe_source("redis://127.0.0.1:1/0", Path("entities.csv"))
    assert "Redis" in source and "--features-file entities.csv ignored" in source


def test_a_changed_features_file_is_read_again_with_its_model(tmp_path: Path) -> None:
    """The model's own file is read when the model (re)loads: after the file changes, a
    change to model.toml (or a new version) reloads it, and the new rows serve."""
    root = tmp_path / "models"
    feature_model(root, "own", 'file = "entities.csv"\n')
    entities = root / "own" / "entities.csv"
    entities.write_text("user_id,age\nu1,50\n")

    async def go() -> tuple[float, float]:
        registry = ModelRegistry(root, features=FeatureWiring(required=True))
        try:
            await registry.load()
            features = registry.model("own").features
            assert features is not None
            before = (await features.rows(["u1"]))[0]
            entities.write_text("user_id,age\nu1,60\n")
            config = root / "own" / "model.toml"
            config.write_text(config.read_text() + "\n")
            for _ in range(3):  # a change is applied once it has held still for a poll
                await registry.refresh()
            features = registry.model("own").features
            assert features is not None
            after = (await features.rows(["u1"]))[0]
            return float(before.vector[0]), float(after.vector[0])
        finally:
            await registry.aclose()

    assert asyncio.run(go()) == (50.0, 60.0)
