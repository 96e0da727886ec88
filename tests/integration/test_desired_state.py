"""SPEC 11 with real processes: a runtime change reaches every worker of a gateway and
every replica sharing a --control-url Redis, survives a restarted worker, ends in one
state when changes race, and waits out a Redis outage while serving goes on."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.control.records import Applied, loaded_field, routing_field
from gateway.control.redis_state import RedisControlStore
from tests import onnx_models
from tests.gateway_process import GatewayProcess, serving
from tests.redis_servers import RedisCluster, RedisServer

pytestmark = pytest.mark.integration

TOKEN = "state-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROW = {
    "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]},
        {"name": "b", "datatype": "INT64", "shape": [1, 4], "data": [1, 1, 1, 1]},
    ]
}
FRESH = 40  # requests, each on a connection of its own
CONVERGE_S = 10.0  # generous: the promise is 1 s per worker


def _repository(root: Path) -> Path:
    for version, scale in [(1, 1.0), (2, 2.0)]:
        onnx_models.write_model(root, "pair", version, onnx_models.scaled_sum(scale))
    # model.toml's own routing: everything to version 2
    onnx_models.write_config(
        root, "pair", '[model]\nversions = "all"\n[routing]\nweights = { "2" = 1 }\n'
    )
    return root


def _args(root: Path, *extra: str) -> list[str]:
    return ["--model-repository", str(root), "--admin-token", TOKEN, *extra]


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("state")
    root = _repository(tmp / "models")
    with serving(_args(root, "--workers", "2"), tmp / "gateway.log") as gateway:
        yield gateway
        # SIGTERM: the supervisor stops its workers too (a SIGKILL would orphan them)
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(timeout=60) == 0


def _versions(url: str, count: int = FRESH) -> Counter[str]:
    """The version that answered each of ``count`` requests, each on a new connection
    (so the kernel spreads them over the workers)."""
    answered: Counter[str] = Counter()
    for _ in range(count):
        response = httpx.post(f"{url}/v2/models/pair/infer", json=ROW, timeout=30)
        answered[response.headers.get("x-model-version", str(response.status_code))] += 1
    return answered


def _statuses(url: str, count: int = FRESH) -> Counter[int]:
    return Counter(
        httpx.post(f"{url}/v2/models/pair/infer", json=ROW, timeout=30).status_code
        for _ in range(count)
    )


def _state(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/admin/state", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def _wait_converged(url: str, workers: int, generation: int | None = None) -> dict[str, Any]:
    """Wait, as a user would, until ``workers`` workers have applied the desired state."""
    deadline = time.monotonic() + CONVERGE_S
    while True:
        state = _state(url)
        pair = state["models"]["pair"]
        done = (
            len(pair["applied"]) == workers
            and pair["converged"]
            and (generation is None or pair["generation"] == generation)
        )
        if done or time.monotonic() > deadline:
            assert done, state
            return state
        time.sleep(0.1)


def _put(url: str, weights: dict[str, int]) -> dict[str, Any]:
    response = httpx.put(
        f"{url}/admin/models/pair/routing", json={"weights": weights}, headers=AUTH, timeout=30
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _delete(url: str) -> dict[str, Any]:
    response = httpx.delete(f"{url}/admin/models/pair/routing", headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_a_routing_change_reaches_every_worker(two_workers: GatewayProcess) -> None:
    url = two_workers.url
    assert _versions(url) == {"2": FRESH}  # model.toml's routing
    answer = _put(url, {"1": 100, "2": 0})
    assert answer["weights"] == {"1": 100.0, "2": 0.0}
    state = _wait_converged(url, 2, answer["generation"])
    assert state["models"]["pair"]["routing"] == {"weights": {"1": 100.0, "2": 0.0}}
    assert _versions(url) == {"1": FRESH}
    readings = {
        str(httpx.get(f"{url}/admin/models/pair/routing", headers=AUTH, timeout=10).json())
        for _ in range(20)
    }
    assert len(readings) == 1, readings  # every worker shows the same routing
    # DELETE: back to model.toml's routing, everywhere
    reset = _delete(url)
    assert reset["generation"] == answer["generation"] + 1
    _wait_converged(url, 2, reset["generation"])
    assert _versions(url) == {"2": FRESH}


def test_unload_and_load_reach_every_worker(two_workers: GatewayProcess) -> None:
    url = two_workers.url
    unloaded = httpx.post(f"{url}/v2/repository/models/pair/unload", headers=AUTH, timeout=30)
    assert unloaded.status_code == 200 and unloaded.json()["unloaded"] is True
    _wait_converged(url, 2, unloaded.json()["generation"])
    assert _statuses(url) == {503: FRESH}
    loaded = httpx.post(f"{url}/v2/repository/models/pair/load", headers=AUTH, timeout=30)
    assert loaded.status_code == 200 and loaded.json()["versions"] == ["1", "2"]
    assert loaded.json()["generation"] == unloaded.json()["generation"] + 1
    _wait_converged(url, 2, loaded.json()["generation"])
    assert _statuses(url) == {200: FRESH}


def test_racing_changes_end_in_one_state(two_workers: GatewayProcess) -> None:
    url = two_workers.url
    errors: list[str] = []

    def change(weights: dict[str, int]) -> None:
        for _ in range(8):
            try:
                _put(url, weights)
            except AssertionError as exc:  # pragma: no cover - reported below
                errors.append(str(exc))

    racers = [
        threading.Thread(target=change, args=({"1": 100, "2": 0},)),
        threading.Thread(target=change, args=({"1": 0, "2": 100},)),
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=120)
    assert errors == []
    state = _wait_converged(url, 2)
    winner = state["models"]["pair"]["routing"]["weights"]
    expected = "1" if winner["1"] == 100.0 else "2"
    assert _versions(url) == {expected: FRESH}  # one split, in every worker
    _delete(url)


def test_a_restarted_worker_comes_back_with_the_runtime_state(
    two_workers: GatewayProcess,
) -> None:
    url = two_workers.url
    answer = _put(url, {"1": 100, "2": 0})
    before = _wait_converged(url, 2, answer["generation"])
    victim = int(before["workers"][0].rsplit("/", 1)[1])
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:  # the replacement reports what it applied (it is ready only after)
        workers = _state(url)["workers"]
        replaced = len(workers) == 2 and before["workers"][0] not in workers
        if replaced or time.monotonic() > deadline:
            assert replaced, workers
            break
        time.sleep(0.2)
    state = _wait_converged(url, 2, answer["generation"])
    assert set(state["models"]["pair"]["applied"].values()) == {answer["generation"]}
    assert _versions(url) == {"1": FRESH}
    _delete(url)


def test_replicas_sharing_redis_converge_and_outlive_an_outage(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis").start()
    root = _repository(tmp_path / "models")
    control = ["--control-url", redis_server.url]
    try:
        with (
            serving(_args(root, *control), tmp_path / "a.log") as a,
            serving(_args(root, *control), tmp_path / "b.log") as b,
        ):
            answer = _put(a.url, {"1": 100, "2": 0})
            state = _wait_converged(b.url, 2, answer["generation"])
            assert state["control"].startswith("Redis at redis://127.0.0.1:")
            assert _versions(b.url) == {"1": FRESH} and _versions(a.url) == {"1": FRESH}

            redis_server.kill()
            refused = httpx.put(
                f"{b.url}/admin/models/pair/routing",
                json={"weights": {"2": 1}},
                headers=AUTH,
                timeout=30,
            )
            assert refused.status_code == 503
            assert "control state (Redis at redis://127.0.0.1:" in refused.json()["error"]
            assert "keeps serving" in refused.json()["error"]
            # serving goes on with the state applied last
            assert _versions(a.url, 10) == {"1": 10} and _versions(b.url, 10) == {"1": 10}
            assert httpx.get(f"{a.url}/v2/health/ready", timeout=10).status_code == 200

            redis_server.start()  # empty: it kept nothing
            deadline = time.monotonic() + 30
            while True:
                retried = httpx.put(
                    f"{b.url}/admin/models/pair/routing",
                    json={"weights": {"2": 1}},
                    headers=AUTH,
                    timeout=30,
                )
                if retried.status_code == 200 or time.monotonic() > deadline:
                    assert retried.status_code == 200, retried.text
                    break
                time.sleep(0.2)
            _wait_converged(a.url, 2, retried.json()["generation"])
            assert _versions(a.url) == {"2": FRESH}
    finally:
        redis_server.kill()


def test_the_control_state_on_a_redis_cluster(tmp_path: Path) -> None:
    """One hash tag keeps a model's record, the names and the reports in one slot, so
    the atomic write works on a cluster too; followers there re-read on their timer."""
    cluster = RedisCluster(tmp_path / "cluster").start()

    async def main() -> None:
        store = RedisControlStore(cluster.url, "replica/1")
        try:
            await store.start()
            first = await store.write("pair", routing_field({"weights": {"1": 1.0}}))
            second = await store.write("pair", loaded_field(False))
            assert (first.generation, second.generation) == (1, 2)
            assert await store.read() == {"pair": second}
            await store.report(Applied("replica/1", {"pair": 2}))
            assert await store.applied() == [Applied("replica/1", {"pair": 2})]
            await store.wait_changed(0.1)  # returns: the timer is the announcement
            assert await store.hold_lease("rollout:pair", "replica/1", 30.0)
            assert not await store.hold_lease("rollout:pair", "replica/2", 30.0)
            await store.release_lease("rollout:pair", "replica/1")
            assert await store.hold_lease("rollout:pair", "replica/2", 0.2)
            await asyncio.sleep(0.3)
            assert await store.hold_lease("rollout:pair", "replica/1", 30.0)
            assert await store.lease_holder("rollout:pair") == "replica/1"
            await store.share("rollout:pair", "host/a", {"requests": {"1": 5}})
            await store.share("rollout:pair", "host/b", {"requests": {"1": 7}})
            await store.share("rollout:pair", "host/a", {"requests": {"1": 6}})
            assert await store.shared("rollout:pair") == {
                "host/a": {"requests": {"1": 6}},
                "host/b": {"requests": {"1": 7}},
            }
        finally:
            await store.aclose()

    try:
        asyncio.run(main())
    finally:
        cluster.kill()
