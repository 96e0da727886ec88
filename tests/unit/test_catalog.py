"""The catalog on tiny real ONNX models, without HTTP: health, metadata, the repository
API and routing changes, with the errors a transport turns into responses."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.control.file_state import FileControlStore
from gateway.errors import InvalidRequest, ModelNotFound, ModelNotReady
from gateway.repository.registry import ModelRegistry
from gateway.service import ModelCatalog
from gateway.service.desired_state import StateFollower
from gateway.service.feature_wiring import FeatureWiring
from tests import onnx_models
from tests.conftest import EXAMPLES


def _repository(root: Path) -> Path:
    for version, scale in [(1, 1.0), (2, 2.0)]:
        onnx_models.write_model(root, "sum", version, onnx_models.scaled_sum(scale))
    onnx_models.write_config(root, "sum", '[model]\nversions = "all"\n')
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.onnx").write_bytes(b"not a model")
    shutil.copytree(EXAMPLES / "fraud", root / "fraud")
    return root


def _run(
    root: Path,
    scenario: Callable[[ModelCatalog], Awaitable[None]],
    peers_ready: Callable[[], bool] | None = None,
) -> None:
    async def main() -> None:
        async with ModelRegistry(_repository(root), features=FeatureWiring()) as registry:
            store = FileControlStore(root / "control", "here/1")
            await store.start()
            follower = StateFollower(store, registry, "here/1")
            await follower.sync()
            await scenario(ModelCatalog(follower, peers_ready))

    asyncio.run(main())


def test_ready_only_when_every_worker_is(tmp_path: Path) -> None:
    peers = [True]

    async def scenario(catalog: ModelCatalog) -> None:
        assert catalog.ready()
        peers[0] = False  # another worker is still loading
        assert not catalog.ready()

    _run(tmp_path, scenario, lambda: peers[0])


def test_metadata_of_a_model_and_of_one_version(tmp_path: Path) -> None:
    async def scenario(catalog: ModelCatalog) -> None:
        whole = catalog.metadata("sum", None)
        assert whole["versions"] == ["1", "2"] and whole["platform"] == "onnxruntime_onnx"
        assert [i["name"] for i in whole["inputs"]] == ["a", "b"]
        assert "parameters" not in whole
        assert catalog.metadata("sum", "1")["versions"] == ["1"]
        fraud = catalog.metadata("fraud", None)
        assert fraud["parameters"]["features"]["entity_input"]["name"] == "user_id"

    _run(tmp_path, scenario)


@pytest.mark.parametrize(
    ("model", "version", "error", "message"),
    [
        ("nope", None, ModelNotFound, "unknown model 'nope'"),
        ("sum", "9", ModelNotFound, "model 'sum' has no version 9; loaded versions: 1, 2"),
        ("sum", "x", ModelNotFound, "versions are positive integers"),
        ("broken", None, ModelNotReady, "model 'broken' has no loaded version"),
        ("broken", "1", ModelNotReady, "version 1 of model 'broken' is not ready"),
    ],
)
def test_a_model_or_version_that_does_not_serve_says_why(
    tmp_path: Path, model: str, version: str | None, error: type[Exception], message: str
) -> None:
    async def scenario(catalog: ModelCatalog) -> None:
        asks: list[Callable[[str, str | None], object]] = [catalog.metadata, catalog.model_ready]
        if (model, version) != ("broken", None):  # its status lists the failed version
            asks.append(catalog.version_status)
        for ask in asks:
            with pytest.raises(error, match=message):
                ask(model, version)

    _run(tmp_path, scenario)


def test_readiness_and_version_status(tmp_path: Path) -> None:
    async def scenario(catalog: ModelCatalog) -> None:
        assert catalog.model_ready("sum", None) == {"name": "sum", "ready": True}
        assert catalog.model_ready("sum", "1") == {"name": "sum", "ready": True, "version": "1"}
        rows = catalog.version_status("sum", None)
        assert [(r["version"], r["state"]) for r in rows] == [
            ("2", "AVAILABLE"),
            ("1", "AVAILABLE"),
        ]
        assert [r["version"] for r in catalog.version_status("sum", "1")] == ["1"]
        (broken,) = catalog.version_status("broken", None)
        assert broken["state"] == "END" and broken["status"]["error_code"] == "UNKNOWN"

    _run(tmp_path, scenario)


def test_index_unload_and_load(tmp_path: Path) -> None:
    async def scenario(catalog: ModelCatalog) -> None:
        everything = catalog.index(ready_only=False)
        assert {"name": "broken", "version": "1", "state": "UNAVAILABLE"}.items() <= (
            everything[0].items()
        )
        assert all(row["state"] == "READY" for row in catalog.index(ready_only=True))
        assert await catalog.unload("sum") == {"name": "sum", "unloaded": True, "generation": 1}
        with pytest.raises(ModelNotReady, match="is unloaded"):
            catalog.model_ready("sum", None)
        loaded = await catalog.load("sum")
        assert loaded == {"name": "sum", "versions": ["1", "2"], "generation": 2}
        with pytest.raises(InvalidRequest, match="model 'broken' has no version that loads"):
            await catalog.load("broken")
        with pytest.raises(ModelNotFound, match="no model 'nope' in the repository"):
            await catalog.load("nope")

    _run(tmp_path, scenario)


def test_routing_read_changed_and_reset(tmp_path: Path) -> None:
    async def scenario(catalog: ModelCatalog) -> None:
        assert catalog.routing("sum") == {"model": "sum", "weights": {}, "generation": 0}
        changed = await catalog.set_routing("sum", {"weights": {"1": 90, "2": 10}})
        assert changed == {"model": "sum", "weights": {"1": 90.0, "2": 10.0}, "generation": 1}
        assert catalog.routing("sum") == changed
        with pytest.raises(InvalidRequest, match="version 7 is not loaded"):
            await catalog.set_routing("sum", {"weights": {"7": 1}})
        with pytest.raises(InvalidRequest, match="routing must be a JSON object"):
            await catalog.set_routing("sum", [1, 2])
        with pytest.raises(ModelNotFound, match="unknown model 'nope'"):
            catalog.require("nope")
        assert catalog.routing("sum") == changed  # refused changes leave it as it was
        reset = await catalog.reset_routing("sum")
        assert reset == {"model": "sum", "weights": {}, "generation": 2}  # model.toml's
        assert catalog.registry.model("sum").routing is None

    _run(tmp_path, scenario)


def test_state_lists_desired_and_applied_generations(tmp_path: Path) -> None:
    async def scenario(catalog: ModelCatalog) -> None:
        await catalog.set_routing("sum", {"weights": {"1": 1, "2": 1}})
        state = await catalog.state()
        assert state["workers"] == ["here/1"]
        assert state["control"].startswith("the file ")
        assert state["models"]["sum"] == {
            "generation": 1,
            "routing": {"weights": {"1": 1.0, "2": 1.0}},
            "loaded": True,
            "applied": {"here/1": 1},
            "converged": True,
        }
        assert state["models"]["fraud"] == {
            "generation": 0,
            "applied": {"here/1": 0},
            "converged": True,
        }

    _run(tmp_path, scenario)
