"""Feature lookups under hostile ids and a hostile store (SPEC 10): what a caller or one
malformed entity does hurts nobody else. Over HTTP, against real redis-server processes
that the fixtures start; each test is one promise."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from gateway.config import Settings
from tests import onnx_models
from tests.conftest import EXAMPLES, RunningGateway, metric_value, start_gateway, stop_gateway
from tests.integration.test_features_redis import (
    DEFAULTS,
    FIELDS,
    MODEL_FILE,
    TABLE,
    expected,
    features_toml,
    infer,
    load_entities,
    metrics,
    probabilities,
)
from tests.redis_servers import RedisCluster, RedisServer

pytestmark = pytest.mark.integration

SMALL_CACHE_BYTES = 200_000  # a few hundred entries
VARIANTS: dict[str, dict[str, object]] = {
    "plain": {"local_ttl_ms": 0},
    "strict": {"local_ttl_ms": 0, "missing": '"error"'},
    "small": {"local_ttl_ms": 60_000, "local_max_bytes": SMALL_CACHE_BYTES},
    "brief": {"local_ttl_ms": 1000},
    "fast": {"local_ttl_ms": 0, "redis_timeout_ms": 50},
    "down": {"local_ttl_ms": 0},  # only the failure log test asks it, while Redis is down
}


def build_repository(root: Path) -> Path:
    for name, overrides in VARIANTS.items():
        shutil.copytree(EXAMPLES / "fraud" / "1", root / name / "1")
        onnx_models.write_config(root, name, features_toml(**overrides))
    return root


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    return ort.InferenceSession(str(MODEL_FILE), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    loaded = load_entities(server.url)
    assert loaded.returncode == 0, loaded.stderr
    yield server
    server.kill()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[RunningGateway]:
    root = build_repository(tmp_path_factory.mktemp("hostile"))
    running = start_gateway(Settings(model_repository=root, redis_url=redis_server.url))
    yield running
    stop_gateway(running)


def redis_errors(gateway: RunningGateway) -> float:
    return metric_value(metrics(gateway), "gateway_redis_errors_total")


def post_ids(gateway: RunningGateway, model: str, ids: list[str]) -> httpx.Response:
    body = {"inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [len(ids)], "data": ids}]}
    return httpx.post(f"{gateway.url}/v2/models/{model}/infer", json=body, timeout=60)


def test_a_request_with_more_than_max_ids_ids_is_a_400_that_never_reaches_the_store(
    gateway: RunningGateway, redis_server: RedisServer, session: ort.InferenceSession
) -> None:
    """More than [features] max_ids ids (default 4096) is a 400 saying the limit and the
    count received, before the store is asked: three callers with 50,000 ids each leave
    another caller's known user with its real features."""
    redis_server.reset_stats()
    errors_before = redis_errors(gateway)
    for _ in range(3):
        response = post_ids(gateway, "plain", [f"x{n}" for n in range(50_000)])
        assert response.status_code == 400
        assert response.json()["error"] == (
            "input 'user_id' carries 50000 entity ids; a request may carry at most 4096 "
            "([features] max_ids)"
        )
    assert redis_server.stats().get("evalsha", 0) == 0  # the store never saw them
    got = probabilities(infer(gateway.url, "plain", ["u0001"]))
    np.testing.assert_allclose(got, expected(session, [TABLE["u0001"]]), atol=1e-6)
    assert redis_errors(gateway) == errors_before
    assert post_ids(gateway, "plain", ["u0001"] * 4096).status_code == 200  # the limit itself


def test_an_entity_id_over_256_bytes_is_a_400(gateway: RunningGateway) -> None:
    """An entity id is at most 256 bytes (of UTF-8); a longer one is a 400 that says which
    element, its size and the limit."""
    response = post_ids(gateway, "plain", ["u0001", "x" * 257])
    assert response.status_code == 400
    assert response.json()["error"] == (
        "input 'user_id' element 1 is an entity id of 257 bytes; entity ids are at most 256 bytes"
    )
    response = post_ids(gateway, "plain", ["é" * 129])  # 129 characters, 258 bytes
    assert response.status_code == 400
    assert "element 0 is an entity id of 258 bytes" in response.json()["error"]
    assert post_ids(gateway, "plain", ["y" * 256]).status_code == 200


def test_the_local_cache_stays_within_local_max_bytes(gateway: RunningGateway) -> None:
    """Many long unknown ids (and known ones) fill the local cache up to local_max_bytes
    and no further (gateway_feature_cache_bytes); unknown ids are cached too, within the
    same bound."""
    rng = np.random.default_rng(7)
    for request in range(40):
        unknown = [f"{request:03d}-{n:04d}-" + "z" * 240 for n in range(200)]
        known = [f"u{n:04d}" for n in rng.integers(1, 1001, size=56)]
        assert post_ids(gateway, "small", unknown + known).status_code == 200
        text = metrics(gateway)
        assert metric_value(text, "gateway_feature_cache_bytes", model="small") <= SMALL_CACHE_BYTES
    entries = metric_value(text, "gateway_feature_cache_entries", model="small")
    held = metric_value(text, "gateway_feature_cache_bytes", model="small")
    assert 100 <= entries <= SMALL_CACHE_BYTES / 512  # full, each charged its overhead at least
    assert held > SMALL_CACHE_BYTES * 0.8


def test_expired_entries_are_freed(gateway: RunningGateway) -> None:
    """Entries past local_ttl_ms are freed as new rows arrive, not kept until evicted."""
    assert post_ids(gateway, "brief", [f"old-{n}" for n in range(200)]).status_code == 200
    assert metric_value(metrics(gateway), "gateway_feature_cache_entries", model="brief") >= 200
    time.sleep(1.2)  # local_ttl_ms = 1000: all 200 have expired
    assert post_ids(gateway, "brief", [f"new-{n}" for n in range(100)]).status_code == 200
    assert metric_value(metrics(gateway), "gateway_feature_cache_entries", model="brief") <= 100


def test_a_key_of_the_wrong_type_is_missing_for_that_entity_alone(
    gateway: RunningGateway, redis_server: RedisServer, session: ort.InferenceSession
) -> None:
    """A key that is a STRING or a LIST where a HASH belongs, or a HASH whose values are
    not numbers, makes that entity missing (defaults, or a 400 naming it with missing =
    "error"); the other entities of the batch get their real features, and the breaker
    stays closed however often it is asked for."""
    client = redis_server.client()
    client.set("user:astring", "12")
    client.rpush("user:alist", "1", "2")
    client.hset("user:words", mapping={"age": "forty", "balance": "1"})
    errors_before = redis_errors(gateway)
    ids = ["astring", "u0001", "alist", "u0002", "words"]
    want = expected(session, [DEFAULTS, TABLE["u0001"], DEFAULTS, TABLE["u0002"], DEFAULTS])
    for _ in range(5):  # more than the breaker's threshold of failures in a row
        got = probabilities(infer(gateway.url, "plain", ids))
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert redis_errors(gateway) == errors_before
    response = infer(gateway.url, "strict", ["u0001", "alist"])
    assert response.status_code == 400
    message = response.json()["error"]
    assert "no features for user_id 'alist'" in message
    assert "user:alist is not a HASH (WRONGTYPE" in message


def test_an_allowed_request_of_4096_ids_does_not_trip_the_breaker(
    gateway: RunningGateway,
) -> None:
    """4096 ids (max_ids) at redis_timeout_ms = 50 go to Redis in calls of at most 256
    keys, each well within the timeout: no failures, so the breaker stays closed."""
    ids = [f"u{n % 1000 + 1:04d}" if n % 2 else f"nobody-{n}" for n in range(4096)]
    assert post_ids(gateway, "fast", ids[:1]).status_code == 200  # connected
    before = metrics(gateway)
    for _ in range(3):
        assert post_ids(gateway, "fast", ids).status_code == 200
    after = metrics(gateway)
    calls = metric_value(after, "gateway_feature_fetch_keys_count", model="fast") - metric_value(
        before, "gateway_feature_fetch_keys_count", model="fast"
    )
    assert calls >= 3 * (2548 // 256)  # 2548 distinct keys a request, in chunks
    # fewer failures than the breaker's threshold (3 in a row) in all: it never opened
    failed = metric_value(after, "gateway_redis_errors_total") - metric_value(
        before, "gateway_redis_errors_total"
    )
    assert failed < 3
    rows = metric_value(after, "gateway_feature_lookups_total", model="fast", source="redis")
    assert (
        rows - metric_value(before, "gateway_feature_lookups_total", model="fast", source="redis")
        > 3 * 2048 * 0.9
    )


def test_store_failures_are_logged_at_most_once_per_10_s_per_model_with_counts(
    gateway: RunningGateway, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """While the store fails, a model logs one line at once, then at most one line per
    10 s with the failures since the previous line, by kind."""
    caplog.set_level(logging.WARNING, logger="gateway.features")
    redis_server.kill()
    try:
        started = time.monotonic()
        for n in range(20):
            assert post_ids(gateway, "down", [f"u{n + 1:04d}"]).status_code == 200
        burst_s = time.monotonic() - started

        def lines() -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if r.name == "gateway.features" and "model down:" in r.getMessage()
            ]

        if burst_s < 9:  # a generous bound: the 20 requests fell in one window
            assert len(lines()) == 1
        assert "1 store call failed (1 connection; 1 keys" in lines()[0]
        deadline = time.monotonic() + 15
        while len(lines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(lines()) == 2, lines()
        summary = lines()[1]
        assert "19 store calls failed (" in summary and "skipped" in summary
        assert "19 keys answered from the local cache or defaults" in summary
        assert "last failure: " in summary
    finally:
        redis_server.start()
        assert load_entities(redis_server.url).returncode == 0


def test_a_key_of_the_wrong_type_in_a_cluster_is_missing_for_that_entity_alone(
    tmp_path: Path, session: ort.InferenceSession
) -> None:
    """The same in a Redis Cluster (a pipeline of HMGETs): the wrong-type key is missing,
    the others are read, and no store failure is counted."""
    cluster = RedisCluster(tmp_path / "cluster").start()
    running: RunningGateway | None = None
    try:
        client = cluster.client()
        for entity in ("u0001", "u0002"):
            client.hset(
                f"user:{entity}",
                mapping={f: str(v) for f, v in zip(FIELDS, TABLE[entity], strict=True)},
            )
        client.set("user:astring", "12")
        root = tmp_path / "repo"
        shutil.copytree(EXAMPLES / "fraud" / "1", root / "plain" / "1")
        onnx_models.write_config(root, "plain", features_toml(local_ttl_ms=0))
        running = start_gateway(Settings(model_repository=root, redis_url=cluster.url))
        for _ in range(4):
            got = probabilities(infer(running.url, "plain", ["u0001", "astring", "u0002"]))
            want = expected(session, [TABLE["u0001"], DEFAULTS, TABLE["u0002"]])
            np.testing.assert_allclose(got, want, atol=1e-6)
        assert redis_errors(running) == 0
    finally:
        if running is not None:
            stop_gateway(running)
        cluster.kill()
