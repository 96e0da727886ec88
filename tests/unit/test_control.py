"""The desired state without HTTP: the file store's atomic writes and reports, and the
follower applying records to a real registry of tiny models."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from gateway.control.file_state import FileControlStore
from gateway.control.records import Applied, ModelRecord, loaded_field, routing_field
from gateway.repository.registry import ModelRegistry
from gateway.service.desired_state import StateFollower
from tests import onnx_models


def test_records_round_trip_through_their_fields() -> None:
    record = ModelRecord(3, {"weights": {"1": 1.0}}, loaded=False)
    assert ModelRecord.from_fields(3, record.fields()) == record
    assert ModelRecord.from_fields(0, {}) == ModelRecord()  # no record: model.toml's
    assert routing_field(None) == {"routing": ""} and loaded_field(True) == {"loaded": "1"}


def test_file_writes_count_generations_and_keep_other_fields(tmp_path: Path) -> None:
    async def main() -> None:
        store = FileControlStore(tmp_path, "here/1")
        await store.start()
        assert await store.read() == {}
        first = await store.write("m", routing_field({"weights": {"1": 1.0}}))
        assert first == ModelRecord(1, {"weights": {"1": 1.0}}, True, first.change)
        second = await store.write("m", loaded_field(False))
        assert second == ModelRecord(2, {"weights": {"1": 1.0}}, False, second.change)
        assert first.change and second.change != first.change  # each change its own id
        assert await store.read() == {"m": second}

    asyncio.run(main())


def test_racing_writers_lose_no_generation(tmp_path: Path) -> None:
    """Writers in other threads (as other workers would be) each take the next
    generation; the record ends as the last write."""
    stores = [FileControlStore(tmp_path, f"here/{n}", pid=n) for n in range(4)]

    def writer(store: FileControlStore, n: int) -> None:
        for _ in range(10):
            asyncio.run(store.write("m", routing_field({"weights": {str(n): 1.0}})))

    threads = [threading.Thread(target=writer, args=(s, n)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    record = asyncio.run(stores[0].read())["m"]
    assert record.generation == 40
    assert record.routing is not None and len(record.routing["weights"]) == 1


def test_reports_of_dead_workers_are_left_out(tmp_path: Path) -> None:
    async def main() -> None:
        alive = FileControlStore(tmp_path, "here/alive")
        dead = FileControlStore(tmp_path, "here/dead", pid=2**22 + 1)  # above pid_max
        await alive.report(Applied("here/alive", {"m": 2}))
        await dead.report(Applied("here/dead", {"m": 1}))
        assert await alive.applied() == [Applied("here/alive", {"m": 2})]

    asyncio.run(main())


def test_wait_changed_returns_when_another_worker_writes(tmp_path: Path) -> None:
    async def main() -> None:
        follower, writer = FileControlStore(tmp_path, "a"), FileControlStore(tmp_path, "b")
        waiting = asyncio.ensure_future(follower.wait_changed(30.0))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await writer.write("m", loaded_field(True))
        await asyncio.wait_for(waiting, 5.0)  # well before its 30 s timer

    asyncio.run(main())


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    for version, scale in [(1, 1.0), (2, 2.0)]:
        onnx_models.write_model(root, "pair", version, onnx_models.scaled_sum(scale))
    onnx_models.write_config(root, "pair", '[model]\nversions = "all"\n')
    return root


def test_the_follower_applies_each_new_generation(repository: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with ModelRegistry(repository) as registry:
            store = FileControlStore(tmp_path / "control", "here/1")
            await store.start()
            follower = StateFollower(store, registry, "here/1")
            await follower.sync()
            assert follower.synced and follower.applied == {}

            await store.write("pair", routing_field({"weights": {"1": 1}}))
            await follower.sync()
            plan = registry.model("pair").routing
            assert plan is not None and plan.weights == ((1, 1.0),)
            assert follower.applied == {"pair": 1}

            await store.write("pair", loaded_field(False))
            await follower.sync()
            assert registry.model("pair").unloaded
            await store.write("pair", loaded_field(True))
            await follower.sync()
            served = registry.model("pair")
            assert served.ready and served.routing == plan  # the override outlived it

            await store.write("pair", routing_field(None))
            await follower.sync()
            assert registry.model("pair").routing is None  # model.toml's: none
            assert await store.applied() == [Applied("here/1", {"pair": 4})]

    asyncio.run(main())


def test_a_state_that_starts_over_still_applies(repository: Path, tmp_path: Path) -> None:
    """A control Redis restarted without its data counts from 1 again: its generations
    repeat ones applied before, and are still changes (another change id)."""

    async def main() -> None:
        async with ModelRegistry(repository) as registry:
            first = FileControlStore(tmp_path / "before", "here/1")
            follower = StateFollower(first, registry, "here/1")
            await first.write("pair", routing_field({"weights": {"2": 1}}))
            await follower.sync()
            assert follower.applied == {"pair": 1}
            emptied = FileControlStore(tmp_path / "after", "here/1")
            await emptied.start()
            await emptied.write("pair", routing_field({"weights": {"1": 1}}))
            follower.store = emptied
            await follower.sync()
            plan = registry.model("pair").routing
            assert plan is not None and plan.weights == ((1, 1.0),)

    asyncio.run(main())


def test_a_record_for_a_model_not_here_is_skipped(repository: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with ModelRegistry(repository) as registry:
            store = FileControlStore(tmp_path / "control", "here/1")
            await store.start()
            await store.write("elsewhere", loaded_field(False))
            follower = StateFollower(store, registry, "here/1")
            await follower.sync()
            assert follower.applied == {"elsewhere": 1}
            assert registry.model("pair").ready

    asyncio.run(main())


def test_a_lease_has_one_holder_until_it_runs_out(tmp_path: Path) -> None:
    async def main() -> None:
        first = FileControlStore(tmp_path, "a/1", pid=1)
        second = FileControlStore(tmp_path, "b/2", pid=2)
        assert await first.hold_lease("rollout:m", "a/1", 30.0)
        assert await first.hold_lease("rollout:m", "a/1", 0.2)  # renewed, shorter
        assert not await second.hold_lease("rollout:m", "b/2", 30.0)
        assert await second.hold_lease("rollout:other", "b/2", 30.0)  # another name
        await asyncio.sleep(0.3)  # the holder stopped renewing: it died, say
        assert await second.hold_lease("rollout:m", "b/2", 30.0)
        assert not await first.hold_lease("rollout:m", "a/1", 30.0)
        await first.release_lease("rollout:m", "a/1")  # not its lease: nothing happens
        assert not await first.hold_lease("rollout:m", "a/1", 30.0)
        await second.release_lease("rollout:m", "b/2")
        assert await first.hold_lease("rollout:m", "a/1", 30.0)
        assert await second.lease_holder("rollout:m") == "a/1"
        assert await second.lease_holder("rollout:none") is None

    asyncio.run(main())


def test_a_board_keeps_each_replicas_last_document_while_it_shares(tmp_path: Path) -> None:
    async def main() -> None:
        store = FileControlStore(tmp_path, "a/1", pid=1)
        await store.share("rollout:m", "host/a", {"n": 1})
        await store.share("rollout:m", "host/b", {"n": 2})
        await store.share("rollout:m", "host/a", {"n": 3})
        await store.share("rollout:other", "host/a", {"n": 4})
        assert await store.shared("rollout:m") == {"host/a": {"n": 3}, "host/b": {"n": 2}}
        assert await store.shared("rollout:none") == {}

    asyncio.run(main())


def test_a_record_that_does_not_apply_here_does_not_stop_the_follower(
    repository: Path, tmp_path: Path
) -> None:
    """A routing another replica wrote for versions this one lacks, or one that is not
    valid at all, is logged and skipped; the next change applies as usual."""

    async def main() -> None:
        async with ModelRegistry(repository) as registry:
            store = FileControlStore(tmp_path / "control", "here/1")
            follower = StateFollower(store, registry, "here/1")
            await store.write("pair", routing_field({"weights": {"7": 1}}))
            await follower.sync()
            await store.write("pair", routing_field({"weights": "all of them"}))
            await follower.sync()
            assert registry.model("pair").routing is None and follower.applied == {"pair": 2}
            await store.write("pair", routing_field({"weights": {"2": 1}}))
            await follower.sync()
            plan = registry.model("pair").routing
            assert plan is not None and plan.weights == ((2, 1.0),)

    asyncio.run(main())
