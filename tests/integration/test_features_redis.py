"""Features by entity id from a real redis-server that the tests start, load, kill, freeze
and restart; the answers are checked against onnxruntime on the assembled vectors."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import pytest
from redis.typing import EncodableT, FieldT

from gateway.config import Settings
from tests import onnx_models
from tests.conftest import EXAMPLES, RunningGateway, metric_value, start_gateway, stop_gateway
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.integration

FIELDS = ["age", "account_age_days", "balance", "txn_count_7d", "avg_txn_amount", "chargebacks_90d"]
DEFAULTS = np.array([35, 365, 0, 0, 0, 0], dtype=np.float32)
ENTITIES = EXAMPLES / "fraud" / "entities.csv"
MODEL_FILE = EXAMPLES / "fraud" / "1" / "model.onnx"


def features_toml(**overrides: object) -> str:
    settings: dict[str, object] = {
        "missing": '"default"',
        "local_ttl_ms": 1000,
        "redis_timeout_ms": 50,
        "on_redis_error": '"default"',
    }
    settings.update(overrides)
    lines = [
        "[runtime]\nintra_op_threads = 1\n[features]",
        'entity_input = "user_id"',
        'key = "user:{user_id}"',
        "fields = [" + ", ".join(f'"{f}"' for f in FIELDS) + "]",
        'input = "features"',
        "defaults = { age = 35, account_age_days = 365 }",
        *(f"{k} = {v}" for k, v in settings.items()),
    ]
    return "\n".join(lines) + "\n"


# model name -> [features] settings that differ from features_toml's
VARIANTS: dict[str, dict[str, object]] = {
    "fraud": {},
    "fraud_strict": {"missing": '"error"', "on_redis_error": '"error"'},
    "fraud_nocache": {"local_ttl_ms": 0},
    "fraud_ttl": {"local_ttl_ms": 300},
    "fraud_slow": {"local_ttl_ms": 0, "redis_timeout_ms": 100},
}


def build_features_repository(root: Path) -> Path:
    for name, overrides in VARIANTS.items():
        shutil.copytree(EXAMPLES / "fraud" / "1", root / name / "1")
        onnx_models.write_config(root, name, features_toml(**overrides))
    # two versions, users split between them and each user kept on one (sticky by id)
    for version in (1, 2):
        shutil.copytree(EXAMPLES / "fraud" / "1", root / "fraud_ab" / str(version))
    onnx_models.write_config(
        root,
        "fraud_ab",
        '[model]\nversions = "all"\n[routing]\nweights = { "1" = 1, "2" = 1 }\n'
        'sticky_key = "user_id"\n'
        + features_toml().replace("[runtime]\nintra_op_threads = 1\n", ""),
    )
    # [features] that do not fit the model's input (5 fields for FP32 [-1, 6])
    shutil.copytree(EXAMPLES / "fraud" / "1", root / "fraud_misfit" / "1")
    onnx_models.write_config(
        root, "fraud_misfit", features_toml().replace(', "chargebacks_90d"]', "]")
    )
    return root


def entity_table() -> dict[str, np.ndarray]:
    with ENTITIES.open(newline="") as handle:
        return {
            row["user_id"]: np.array([float(row[f]) for f in FIELDS], dtype=np.float32)
            for row in csv.DictReader(handle)
        }


TABLE = entity_table()


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    return ort.InferenceSession(str(MODEL_FILE), providers=["CPUExecutionProvider"])


def expected(session: ort.InferenceSession, vectors: list[np.ndarray]) -> np.ndarray:
    probabilities, _ = session.run(None, {"features": np.stack(vectors)})
    return np.asarray(probabilities)


def load_entities(url: str, path: Path = ENTITIES, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "features", "load", str(path)]
        + ["--redis-url", url, "--key", "user:{user_id}", *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), unix_socket=True).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def features_gateway(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[RunningGateway]:
    loaded = load_entities(redis_server.url)
    assert loaded.returncode == 0, loaded.stderr
    root = build_features_repository(tmp_path_factory.mktemp("features"))
    running = start_gateway(Settings(model_repository=root, redis_url=redis_server.url))
    yield running
    stop_gateway(running)


@pytest.fixture
def redis_up(redis_server: RedisServer, features_gateway: RunningGateway) -> Iterator[RedisServer]:
    """The server, running and holding the example entities, and the gateway reading from
    it (its breaker closed again after an earlier test's outage)."""
    redis_server.ensure_running()
    wait_until_redis_serves(features_gateway)
    yield redis_server
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    redis_server.thaw()
    assert load_entities(redis_server.url).returncode == 0


def wait_until_redis_serves(gateway: RunningGateway, timeout_s: float = 15.0) -> None:
    labels = {"model": "fraud_nocache", "source": "redis"}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = metric_value(metrics(gateway), "gateway_feature_lookups_total", **labels)
        assert infer(gateway.url, "fraud_nocache", ["u0001"]).status_code == 200
        if metric_value(metrics(gateway), "gateway_feature_lookups_total", **labels) > before:
            return
        time.sleep(0.1)
    raise AssertionError("the gateway did not read features from Redis again")


def infer(url: str, model: str, ids: list[str], **fields: list[float]) -> httpx.Response:
    inputs = [{"name": "user_id", "datatype": "BYTES", "shape": [len(ids)], "data": ids}]
    for name, values in fields.items():
        inputs.append({"name": name, "datatype": "FP32", "shape": [len(values)], "data": values})
    return httpx.post(f"{url}/v2/models/{model}/infer", json={"inputs": inputs}, timeout=30)


def probabilities(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    output = next(o for o in response.json()["outputs"] if o["name"] == "probabilities")
    return np.array(output["data"], dtype=np.float32).reshape(output["shape"])


def metrics(gateway: RunningGateway) -> str:
    return httpx.get(f"{gateway.url}/metrics").text


def test_features_from_redis_equal_onnxruntime_on_the_assembled_vector(
    features_gateway: RunningGateway, redis_up: RedisServer, session: ort.InferenceSession
) -> None:
    ids = ["u0001", "u0417", "u0999", "u0001"]
    got = probabilities(infer(features_gateway.url, "fraud_nocache", ids))
    np.testing.assert_allclose(got, expected(session, [TABLE[i] for i in ids]), atol=1e-6)
    # the same answer as when the caller sends the vector itself
    inline = httpx.post(
        f"{features_gateway.url}/v2/models/fraud_nocache/infer",
        json={
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": [4, 6],
                    "data": np.stack([TABLE[i] for i in ids]).ravel().tolist(),
                }
            ]
        },
    )
    np.testing.assert_allclose(got, probabilities(inline), atol=1e-6)


def test_caller_fields_override_the_store(
    features_gateway: RunningGateway, redis_up: RedisServer, session: ort.InferenceSession
) -> None:
    ids = ["u0002", "u0003"]
    got = probabilities(
        infer(features_gateway.url, "fraud", ids, chargebacks_90d=[4, 0], balance=[10, 20])
    )
    vectors = [TABLE[i].copy() for i in ids]
    for vector, chargebacks, balance in zip(vectors, [4, 0], [10, 20], strict=True):
        vector[FIELDS.index("chargebacks_90d")] = chargebacks
        vector[FIELDS.index("balance")] = balance
    np.testing.assert_allclose(got, expected(session, vectors), atol=1e-6)


def test_unknown_entities_get_defaults_or_a_400(
    features_gateway: RunningGateway, redis_up: RedisServer, session: ort.InferenceSession
) -> None:
    redis_up.client().hset("user:partial", mapping={"balance": "250.5"})
    got = probabilities(infer(features_gateway.url, "fraud", ["nobody", "partial"]))
    partial = DEFAULTS.copy()
    partial[FIELDS.index("balance")] = 250.5
    np.testing.assert_allclose(got, expected(session, [DEFAULTS, partial]), atol=1e-6)

    response = infer(features_gateway.url, "fraud_strict", ["u0005", "nobody", "ghost", "ghost"])
    assert response.status_code == 400
    message = response.json()["error"]
    assert "'nobody', 'ghost'" in message and "u0005" not in message
    assert "user:{user_id}" in message and 'missing = "error"' in message


def test_a_value_that_is_not_a_number_makes_that_entity_missing(
    features_gateway: RunningGateway, redis_up: RedisServer, session: ort.InferenceSession
) -> None:
    redis_up.client().hset("user:garbled", mapping={"age": "forty", "balance": "1"})
    got = probabilities(infer(features_gateway.url, "fraud_nocache", ["garbled", "u0001"]))
    np.testing.assert_allclose(got, expected(session, [DEFAULTS, TABLE["u0001"]]), atol=1e-6)
    # missing = "error": a 400 that names the entity and what is wrong with it
    response = infer(features_gateway.url, "fraud_strict", ["garbled", "u0001"])
    assert response.status_code == 400
    message = response.json()["error"]
    assert "no features for user_id 'garbled'" in message and "u0001" not in message
    assert "user:garbled field 'age' holds 'forty', which is not a number" in message


def test_local_cache_entries_expire_after_local_ttl_ms(
    features_gateway: RunningGateway, redis_up: RedisServer, session: ort.InferenceSession
) -> None:
    client = redis_up.client()
    client.hset("user:ttl", mapping=dict(zip(FIELDS, map(str, TABLE["u0010"]), strict=True)))
    first = probabilities(infer(features_gateway.url, "fraud_ttl", ["ttl"]))
    np.testing.assert_allclose(first, expected(session, [TABLE["u0010"]]), atol=1e-6)
    client.hset("user:ttl", mapping=dict(zip(FIELDS, map(str, TABLE["u0020"]), strict=True)))
    cached = probabilities(infer(features_gateway.url, "fraud_ttl", ["ttl"]))
    np.testing.assert_allclose(cached, first, atol=1e-6)  # still the cached row
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.1)
        fresh = probabilities(infer(features_gateway.url, "fraud_ttl", ["ttl"]))
        if not np.allclose(fresh, first, atol=1e-6):
            break
    np.testing.assert_allclose(fresh, expected(session, [TABLE["u0020"]]), atol=1e-6)


def test_one_round_trip_per_batch(features_gateway: RunningGateway, redis_up: RedisServer) -> None:
    infer(features_gateway.url, "fraud_nocache", ["u0001"])  # the connection is open
    redis_up.reset_stats()
    ids = [f"u{n:04d}" for n in range(100, 108)] * 2  # 16 rows, 8 distinct entities
    before = metrics(features_gateway)
    assert infer(features_gateway.url, "fraud_nocache", ids).status_code == 200
    stats = redis_up.stats()
    assert stats["hmget"] == 8  # deduplicated
    assert stats["reads"] == 1  # in one pipelined round trip
    after = metrics(features_gateway)
    labels = {"model": "fraud_nocache"}
    trips = metric_value(after, "gateway_feature_fetch_keys_count", **labels) - metric_value(
        before, "gateway_feature_fetch_keys_count", **labels
    )
    assert trips == 1
    redis_rows = metric_value(after, "gateway_feature_lookups_total", source="redis", **labels)
    assert (
        redis_rows - metric_value(before, "gateway_feature_lookups_total", source="redis", **labels)
        == 16
    )


def run_load(url: str, model: str, seconds: float, threads: int = 4) -> list[int]:
    """Statuses of requests sent back to back from ``threads`` threads for ``seconds``
    (at most 5,000 requests each)."""
    statuses: list[int] = []
    stop = time.monotonic() + seconds

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(base_url=url, timeout=30) as client:
            for _ in range(5000):
                if time.monotonic() > stop:
                    return
                ids = [f"u{n:04d}" for n in rng.integers(1, 1001, size=4)]
                body = {
                    "inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [4], "data": ids}]
                }
                statuses.append(client.post(f"/v2/models/{model}/infer", json=body).status_code)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=seconds + 60)
    return statuses


def test_redis_killed_under_load_fails_no_request(
    features_gateway: RunningGateway, redis_up: RedisServer
) -> None:
    killer = threading.Timer(1.0, redis_up.kill)
    killer.start()
    statuses = run_load(features_gateway.url, "fraud", seconds=3.0)
    killer.join()
    assert len(statuses) > 20
    assert set(statuses) == {200}
    text = metrics(features_gateway)
    assert metric_value(text, "gateway_redis_errors_total") >= 1
    assert metric_value(text, "gateway_feature_lookups_total", model="fraud", source="default") > 0


def test_redis_down_with_on_redis_error_error_is_a_503(
    features_gateway: RunningGateway, redis_up: RedisServer
) -> None:
    redis_up.kill()
    response = infer(features_gateway.url, "fraud_strict", ["u0001"])
    assert response.status_code == 503
    message = response.json()["error"]
    assert "model 'fraud_strict'" in message and "feature store" in message
    assert 'on_redis_error = "error"' in message


def test_a_frozen_redis_costs_a_timeout_now_and_then_not_per_request(
    features_gateway: RunningGateway, redis_up: RedisServer
) -> None:
    assert infer(features_gateway.url, "fraud_slow", ["u0001"]).status_code == 200
    errors_before = metric_value(metrics(features_gateway), "gateway_redis_errors_total")
    redis_up.freeze()
    requests = 40
    started = time.monotonic()
    with httpx.Client(base_url=features_gateway.url, timeout=30) as client:
        for n in range(requests):
            body = {
                "inputs": [
                    {
                        "name": "user_id",
                        "datatype": "BYTES",
                        "shape": [1],
                        "data": [f"u{n + 500:04d}"],
                    }
                ]
            }
            assert client.post("/v2/models/fraud_slow/infer", json=body).status_code == 200
    elapsed = time.monotonic() - started
    errors = metric_value(metrics(features_gateway), "gateway_redis_errors_total") - errors_before
    # redis_timeout_ms = 100: paid for the failures that open the breaker (3), then once
    # per half-open probe (one per second), never once per request
    assert 3 <= errors <= 3 + elapsed / 1.0 + 1
    assert elapsed < requests * 0.1  # a generous bound: far less than a timeout each


def test_the_gateway_reconnects_when_redis_is_back(
    features_gateway: RunningGateway, redis_up: RedisServer, session: ort.InferenceSession
) -> None:
    redis_up.kill()
    for _ in range(5):  # the breaker opens
        assert infer(features_gateway.url, "fraud_nocache", ["u0001"]).status_code == 200
    redis_up.start()  # empty: write one entity with values of another
    redis_up.client().hset(
        "user:u0001", mapping=dict(zip(FIELDS, map(str, TABLE["u0777"]), strict=True))
    )
    want = expected(session, [TABLE["u0777"]])
    deadline = time.monotonic() + 10
    while True:
        got = probabilities(infer(features_gateway.url, "fraud_nocache", ["u0001"]))
        if np.allclose(got, want, atol=1e-6) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    np.testing.assert_allclose(got, want, atol=1e-6)  # features from Redis again


def test_unix_socket_url(
    tmp_path: Path, redis_up: RedisServer, session: ort.InferenceSession
) -> None:
    root = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "fraud", root / "fraud")
    running = start_gateway(Settings(model_repository=root, redis_url=redis_up.unix_url))
    try:
        got = probabilities(infer(running.url, "fraud", ["u0042"]))
    finally:
        stop_gateway(running)
    np.testing.assert_allclose(got, expected(session, [TABLE["u0042"]]), atol=1e-6)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_without_redis_a_features_file_serves(
    tmp_path: Path, suffix: str, session: ort.InferenceSession
) -> None:
    path = tmp_path / f"entities{suffix}"
    if suffix == ".csv":
        shutil.copy(ENTITIES, path)
    else:
        lines = [
            orjson.dumps({"user_id": user, **dict(zip(FIELDS, map(float, row), strict=True))})
            for user, row in TABLE.items()
        ]
        path.write_bytes(b"\n".join(lines) + b"\n")
    root = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "fraud", root / "fraud")
    running = start_gateway(Settings(model_repository=root, features_file=path))
    try:
        got = probabilities(infer(running.url, "fraud", ["u0003", "u0300", "stranger"]))
    finally:
        stop_gateway(running)
    # "stranger" gets the bundled model.toml's defaults (DEFAULTS are features_toml's)
    want = expected(session, [TABLE["u0003"], TABLE["u0300"], example_defaults()])
    np.testing.assert_allclose(got, want, atol=1e-6)


def example_defaults() -> np.ndarray:
    """The [features] defaults of models/fraud/model.toml, in field order."""
    config = tomllib.loads((EXAMPLES / "fraud" / "model.toml").read_text())
    defaults = config["features"]["defaults"]
    return np.array([defaults.get(field, 0.0) for field in FIELDS], dtype=np.float32)


def test_sticky_routing_by_entity_id(
    features_gateway: RunningGateway, redis_up: RedisServer
) -> None:
    versions: dict[str, set[str]] = {}
    for user in [f"u{n:04d}" for n in range(1, 41)] * 3:
        response = infer(features_gateway.url, "fraud_ab", [user])
        assert response.status_code == 200, response.text
        versions.setdefault(user, set()).add(response.headers["x-model-version"])
    assert all(len(seen) == 1 for seen in versions.values())  # each user stays put
    assert {v for seen in versions.values() for v in seen} == {"1", "2"}  # users are split


def test_features_that_do_not_fit_the_model_keep_it_from_loading(
    features_gateway: RunningGateway,
) -> None:
    response = httpx.post(
        f"{features_gateway.url}/v2/models/fraud_misfit/infer",
        json={"inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["u1"]}]},
    )
    assert response.status_code == 503
    assert (
        "[features] input 'features' must be FP32 [-1, 5] to take the 5 fields, "
        "but the model has FP32 [-1, 6]"
    ) in response.json()["error"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            [{"name": "user_id", "datatype": "INT64", "shape": [1], "data": [1]}],
            "input 'user_id' carries entity ids and must be BYTES, got INT64",
        ),
        (
            [{"name": "user_id", "datatype": "BYTES", "shape": [1, 2], "data": ["a", "b"]}],
            "input 'user_id' must have shape [n] or [n, 1] with n >= 1 entity ids, got [1, 2]",
        ),
        (
            [
                {"name": "user_id", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
                {"name": "balance", "datatype": "FP32", "shape": [3], "data": [1, 2, 3]},
            ],
            "input 'balance' overrides a feature: expected shape [2] or [2, 1] (one value per "
            "id in 'user_id'), got [3]",
        ),
        (
            [
                {"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["a"]},
                {"name": "features", "datatype": "FP32", "shape": [1, 6], "data": [0] * 6},
            ],
            "send either 'user_id' (entity ids, features looked up) or 'features' (the "
            "features themselves), not both",
        ),
        (
            [{"name": "balance", "datatype": "FP32", "shape": [1], "data": [1]}],
            "unknown input 'balance'; the model's inputs are 'features'",
        ),
    ],
)
def test_bad_feature_requests_are_400(
    features_gateway: RunningGateway, inputs: list[dict[str, object]], message: str
) -> None:
    response = httpx.post(f"{features_gateway.url}/v2/models/fraud/infer", json={"inputs": inputs})
    assert response.status_code == 400
    assert response.json()["error"] == message


def redis_hash(fields: dict[str, str]) -> dict[FieldT, EncodableT]:
    """The same fields, typed as redis-py's hset takes them (its keys are not only str)."""
    return dict(fields.items())


STORED = {
    "user:plain": {"age": "42", "balance": "1234.5"},
    "user:spaces": {"age": " 7 ", "balance": "-0"},
    "user:exponent": {"age": "1e3", "balance": "-2.5E-3"},
    "user:partial": {"balance": "9"},
    "user:nan": {"age": "nan", "balance": "1"},
    "user:inf": {"age": "1", "balance": "-inf"},
    "user:huge": {"age": "1e300", "balance": "1"},
    "user:text": {"age": "forty", "balance": "1"},
}


def test_redis_and_memory_stores_read_values_alike(redis_up: RedisServer) -> None:
    from gateway.errors import FeatureDataInvalid
    from gateway.features.redis_store import RedisStore
    from gateway.features.rows import FeatureRow
    from gateway.features.stores import MemoryStore

    client = redis_up.client()
    memory = MemoryStore()
    for key, mapping in STORED.items():
        client.hset(key, mapping=redis_hash(mapping))
        memory.put(key, mapping)
    keys = [*STORED, "user:absent"]
    fields = ["age", "balance"]
    defaults = np.array([35, -1], dtype=np.float32)

    Rows = list[FeatureRow | FeatureDataInvalid]

    async def both() -> tuple[Rows, Rows]:
        store = RedisStore.from_url(redis_up.url, time.monotonic)
        try:
            from_redis = await store.fetch_rows(keys, fields, defaults, 5.0)
        finally:
            await store.aclose()
        return list(from_redis), list(await memory.fetch_rows(keys, fields, defaults, 5.0))

    import asyncio

    from_redis, from_memory = asyncio.run(both())

    def shown(row: FeatureRow | FeatureDataInvalid) -> object:
        if isinstance(row, FeatureDataInvalid):
            return str(row)
        return (row.vector.tolist(), row.found)

    assert [shown(r) for r in from_redis] == [shown(r) for r in from_memory]
    assert [shown(r) for r in from_redis] == [
        ([42.0, 1234.5], True),
        ([7.0, -0.0], True),
        ([1000.0, -0.0024999999441206455], True),
        ([35.0, 9.0], True),
        "feature store: user:nan field 'age' holds 'nan', which is not a number",
        "feature store: user:inf field 'balance' holds '-inf', which is not a number",
        "feature store: user:huge field 'age' holds a number out of the range of FP32",
        "feature store: user:text field 'age' holds 'forty', which is not a number",
        ([35.0, -1.0], False),
    ]
