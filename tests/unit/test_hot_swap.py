"""Keeping the registry in step with the disk: the hot-swap rules, on real files."""

from __future__ import annotations

import asyncio
import gc
import shutil
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from gateway.errors import ModelNotFound
from gateway.repository.registry import ModelRegistry
from tests import onnx_models

X: dict[str, np.ndarray] = {"a": np.ones((1, 4), np.float32), "b": np.ones((1, 4), np.int64)}


def _scenario(root: Path, body: Callable[[ModelRegistry], Awaitable[None]]) -> None:
    async def run() -> None:
        async with ModelRegistry(root, drain_timeout_s=5) as registry:
            await body(registry)

    asyncio.run(run())


async def _settle(registry: ModelRegistry) -> list[str]:
    """Two polls: a change is applied once it has looked the same twice."""
    first = await registry.refresh()
    return first + await registry.refresh()


async def _sum(registry: ModelRegistry, version: str | None = None) -> float:
    (y,) = await registry.resolve("pair", version).run(X, ["sum"])
    return float(y[0, 0])


@pytest.fixture
def root(tmp_path: Path) -> Path:
    onnx_models.write_model(tmp_path, "pair", 1, onnx_models.scaled_sum(1.0))
    return tmp_path


def test_a_new_version_serves_once_settled(root: Path) -> None:
    async def body(registry: ModelRegistry) -> None:
        assert await _sum(registry) == 2.0
        onnx_models.write_model(root, "pair", 2, onnx_models.scaled_sum(3.0))
        assert await registry.refresh() == []  # seen once: maybe still being written
        assert registry.resolve("pair", None).info.version == 1
        assert await registry.refresh() == ["pair"]
        assert await _sum(registry) == 6.0
        assert registry.state.models["pair"].versions.keys() == {2}  # policy: latest

    _scenario(root, body)


def test_unchanged_versions_are_reused_and_removed_ones_retired(root: Path) -> None:
    onnx_models.write_config(root, "pair", '[model]\nversions = "all"\n')
    onnx_models.write_model(root, "pair", 2, onnx_models.scaled_sum(3.0))

    async def body(registry: ModelRegistry) -> None:
        first = registry.resolve("pair", "1")
        session = weakref.ref(first._model.sessions[0])
        onnx_models.write_model(root, "pair", 3, onnx_models.scaled_sum(5.0))
        await _settle(registry)
        assert registry.resolve("pair", "1") is first  # untouched: not reloaded
        shutil.rmtree(root / "pair" / "1")
        await _settle(registry)
        with pytest.raises(ModelNotFound):
            registry.resolve("pair", "1")
        assert sorted(registry.state.models["pair"].versions) == [2, 3]
        await asyncio.gather(*registry._retiring)  # noqa: SLF001 - wait for the drain
        del first
        for _ in range(100):  # bounded: threads and callbacks let go within moments
            gc.collect()
            if session() is None:
                break
            await asyncio.sleep(0.05)
        assert session() is None  # the retired version's memory really is released

    _scenario(root, body)


def test_a_changed_config_is_validated_then_applied(root: Path) -> None:
    async def body(registry: ModelRegistry) -> None:
        before = registry.resolve("pair", None)
        onnx_models.write_config(root, "pair", "[batching]\nmax_batch_size = 4\n")
        await _settle(registry)
        after = registry.resolve("pair", None)
        assert after is not before and after.policy.max_batch_size == 4
        onnx_models.write_config(root, "pair", "[batching]\nmax_batch_size = -4\n")
        await _settle(registry)
        served = registry.state.models["pair"]
        assert registry.resolve("pair", None) is after  # the previous config keeps serving
        assert served.error is not None and "max_batch_size" in served.error
        assert "previous config still serving" in registry.index()[0]["reason"]
        assert await _sum(registry) == 2.0

    _scenario(root, body)


def test_a_corrupt_or_mismatched_version_never_replaces_a_serving_one(root: Path) -> None:
    onnx_models.write_config(root, "pair", '[model]\nversions = "all"\n')

    async def body(registry: ModelRegistry) -> None:
        (root / "pair" / "2").mkdir()
        (root / "pair" / "2" / "model.onnx").write_bytes(b"garbage")
        onnx_models.write_model(root, "pair", 3, onnx_models.fixed_shape())  # other inputs
        await _settle(registry)
        served = registry.state.models["pair"]
        assert sorted(served.versions) == [1]
        assert "protobuf" in served.failures[2]
        assert "signature differs from version 1" in served.failures[3]
        rows = {row.get("version"): row for row in registry.index()}
        assert rows["1"]["state"] == "READY"
        assert rows["2"]["state"] == "UNAVAILABLE" and rows["3"]["state"] == "UNAVAILABLE"
        # a serving version whose file is replaced by garbage keeps its old file's session
        (root / "pair" / "1" / "model.onnx").write_bytes(b"garbage too")
        await _settle(registry)
        assert await _sum(registry, "1") == 2.0
        assert "still serves" in registry.state.models["pair"].failures[1]

    _scenario(root, body)


def test_models_come_and_go_and_can_be_unloaded_and_loaded(root: Path) -> None:
    async def body(registry: ModelRegistry) -> None:
        onnx_models.write_model(root, "fixed", 1, onnx_models.fixed_shape())
        assert await _settle(registry) == ["fixed"]
        assert registry.resolve("fixed", None).info.version == 1
        await registry.unload_model("fixed")
        with pytest.raises(Exception, match="is unloaded"):
            registry.resolve("fixed", None)
        await _settle(registry)  # the watcher leaves an unloaded model alone
        assert registry.state.models["fixed"].unloaded
        await registry.load_model("fixed")
        assert registry.resolve("fixed", None).info.version == 1
        shutil.rmtree(root / "fixed")
        await _settle(registry)
        assert "fixed" not in registry.state.models
        with pytest.raises(ModelNotFound, match="no model 'nope' in the repository"):
            await registry.load_model("nope")
        with pytest.raises(ModelNotFound, match="not a valid model name"):
            await registry.load_model("../etc")

    _scenario(root, body)


def _corrupt(root: Path, version: int) -> None:
    (root / "pair" / str(version)).mkdir()
    (root / "pair" / str(version) / "model.onnx").write_bytes(b"not a model")


def test_latest_n_serves_the_highest_versions_that_load(root: Path) -> None:
    """ "latest:N" is the N highest versions that load: a corrupt one is skipped (and
    reported) and the next one down serves, at start and on a hot swap alike."""
    onnx_models.write_model(root, "pair", 2, onnx_models.scaled_sum(3.0))
    _corrupt(root, 3)
    onnx_models.write_config(root, "pair", '[model]\nversions = "latest:2"\n')

    async def body(registry: ModelRegistry) -> None:
        served = registry.state.models["pair"]
        assert sorted(served.versions) == [1, 2] and "protobuf" in served.failures[3]
        kept = dict(served.versions)
        onnx_models.write_model(root, "pair", 4, onnx_models.scaled_sum(7.0))
        _corrupt(root, 5)
        await _settle(registry)
        served = registry.state.models["pair"]
        assert sorted(served.versions) == [2, 4]  # 5 and 3 fail: 4, then 2 (reused)
        assert served.versions[2] is kept[2]
        assert sorted(served.failures) == [3, 5]

    _scenario(root, body)


def test_a_list_policy_whose_versions_all_fail_keeps_the_previous_state(root: Path) -> None:
    """A changed [model] versions list none of whose versions loads leaves the versions
    and config that served before serving, and says why."""
    onnx_models.write_config(root, "pair", "[model]\nversions = [1]\n")

    async def body(registry: ModelRegistry) -> None:
        before = registry.resolve("pair", None)
        _corrupt(root, 2)
        onnx_models.write_config(root, "pair", "[model]\nversions = [2]\n")
        await _settle(registry)
        served = registry.state.models["pair"]
        assert registry.resolve("pair", None) is before
        assert served.config is not None and served.config.model.versions == [1]
        assert served.error is not None and "no version of the new state loads" in served.error
        assert "protobuf" in served.failures[2]

    _scenario(root, body)


def test_a_first_load_skips_a_corrupt_latest_version(root: Path) -> None:
    """At start, with "latest", a corrupt highest version leaves the next one serving."""
    _corrupt(root, 2)

    async def body(registry: ModelRegistry) -> None:
        assert registry.resolve("pair", None).info.version == 1
        assert "protobuf" in registry.state.models["pair"].failures[2]

    _scenario(root, body)


def test_removing_every_version_still_unloads_them(root: Path) -> None:
    """Keeping the previous state is for what fails to load, not for what was removed."""

    async def body(registry: ModelRegistry) -> None:
        shutil.rmtree(root / "pair" / "1")
        await _settle(registry)
        assert not registry.state.models["pair"].versions

    _scenario(root, body)
