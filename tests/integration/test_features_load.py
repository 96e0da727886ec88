"""`gateway features load` against a real redis-server, and a three-node Redis Cluster
serving features to the gateway."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from gateway.config import Settings
from tests.conftest import EXAMPLES, start_gateway, stop_gateway
from tests.integration.test_features_redis import (
    ENTITIES,
    FIELDS,
    MODEL_FILE,
    TABLE,
    expected,
    infer,
    load_entities,
    probabilities,
)
from tests.redis_servers import RedisCluster, RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


def test_load_csv(redis_server: RedisServer) -> None:
    result = load_entities(redis_server.url, ENTITIES, "--ttl", "600")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"loaded 1000 entities from {ENTITIES} into {redis_server.url}")
    assert "6 fields, TTL 600 s" in result.stdout and "skipped 0 bad row(s)" in result.stdout
    client = redis_server.client()
    assert client.dbsize() == 1000
    stored = client.hgetall("user:u0002")
    assert [float(stored[f]) for f in FIELDS] == pytest.approx(TABLE["u0002"].tolist(), rel=1e-6)
    assert 0 < client.ttl("user:u0002") <= 600
    # pipelined in chunks: far fewer round trips than rows
    assert client.info("stats")["total_reads_processed"] < 100


BAD_CSV = """user_id,age,balance
a1,30,100.5
a2,thirty,1
,40,2
a3,50
a4,60,inf
a5,70,
"""

BAD_JSONL = """{"user_id": "j1", "age": 30, "balance": 1.5}
{"user_id": "j2", "age": "x"}
not json
[1, 2]

{"user_id": "j3", "age": {"nested": 1}}
{"age": 5}
{"user_id": "j4", "age": null, "balance": "2.5"}
"""


@pytest.mark.parametrize(
    ("name", "text", "good", "bad"),
    [
        (
            "bad.csv",
            BAD_CSV,
            {"user:a1": {"age": "30", "balance": "100.5"}, "user:a5": {"age": "70"}},
            [
                "line 3: 'age' is 'thirty', not a number",
                "line 4: no value in the id column 'user_id'",
                "line 5: 2 values for 3 columns",
                "line 6: 'balance' is 'inf', not a finite number",
            ],
        ),
        (
            "bad.jsonl",
            BAD_JSONL,
            {"user:j1": {"age": "30", "balance": "1.5"}, "user:j4": {"balance": "2.5"}},
            [
                "line 2: 'age' is 'x', not a number",
                "line 3: not valid JSON",
                "line 4: expected a JSON object, got list",
                "line 6: 'age' must be a number or a string",
                "line 7: no value in the id column 'user_id'",
            ],
        ),
    ],
)
def test_bad_rows_are_reported_by_line_and_skipped_or_fail_with_strict(
    tmp_path: Path,
    redis_server: RedisServer,
    name: str,
    text: str,
    good: dict[str, dict[str, str]],
    bad: list[str],
) -> None:
    path = tmp_path / name
    path.write_text(text)
    strict = load_entities(redis_server.url, path, "--strict")
    assert strict.returncode == 1
    assert f"{len(bad)} bad row(s); nothing written (--strict)" in strict.stdout
    assert redis_server.client().dbsize() == 0

    result = load_entities(redis_server.url, path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for expected_line, line in zip(bad, lines, strict=False):
        assert line.startswith(expected_line), (expected_line, line)
    assert f"loaded {len(good)} entities" in lines[-1]
    assert f"skipped {len(bad)} bad row(s)" in lines[-1]
    client = redis_server.client()
    assert {key: client.hgetall(key) for key in good} == good
    assert client.dbsize() == len(good)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--key", "user"], "must contain exactly one placeholder"),
        (["--redis-url", "http://x"], "--redis-url must start with redis://"),
        (["--ttl", "0"], "--ttl must be a positive number of seconds"),
    ],
)
def test_load_usage_errors(redis_server: RedisServer, args: list[str], message: str) -> None:
    # a flag given twice: the later one counts
    result = load_entities(redis_server.url, ENTITIES, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert redis_server.client().dbsize() == 0


def test_load_reports_an_unreachable_redis(redis_server: RedisServer) -> None:
    url = redis_server.url
    redis_server.kill()
    result = load_entities(url)
    assert result.returncode == 1
    assert f"writing to {url} failed" in result.stderr


def test_features_from_a_redis_cluster(tmp_path: Path) -> None:
    cluster = RedisCluster(tmp_path / "cluster").start()
    try:
        loaded = load_entities(cluster.url)
        assert loaded.returncode == 0, loaded.stderr
        client = cluster.client()
        # the entities are spread over the three nodes
        per_node = [node.client().dbsize() for node in cluster.nodes]
        assert sum(per_node) == 1000 and min(per_node) > 200
        client.close()
        root = tmp_path / "repo"
        shutil.copytree(EXAMPLES / "fraud", root / "fraud")
        running = start_gateway(Settings(model_repository=root, redis_url=cluster.url))
        try:
            ids = [f"u{n:04d}" for n in range(1, 1001, 61)]
            got = probabilities(infer(running.url, "fraud", ids))
        finally:
            stop_gateway(running)
        session = ort.InferenceSession(str(MODEL_FILE), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(got, expected(session, [TABLE[i] for i in ids]), atol=1e-6)
    finally:
        cluster.kill()


def test_features_over_tls(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "tls", tls=True).start()
    try:
        assert server.url.startswith("rediss://")
        loaded = load_entities(server.url)
        assert loaded.returncode == 0, loaded.stderr
        root = tmp_path / "repo"
        shutil.copytree(EXAMPLES / "fraud", root / "fraud")
        running = start_gateway(Settings(model_repository=root, redis_url=server.url))
        try:
            got = probabilities(infer(running.url, "fraud", ["u0123", "u0456"]))
        finally:
            stop_gateway(running)
    finally:
        server.kill()
    session = ort.InferenceSession(str(MODEL_FILE), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got, expected(session, [TABLE["u0123"], TABLE["u0456"]]), atol=1e-6)


def test_a_gateway_started_before_redis_picks_it_up(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "late")  # not started yet
    root = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "fraud", root / "fraud")
    running = start_gateway(Settings(model_repository=root, redis_url=server.url))
    try:
        defaults = probabilities(infer(running.url, "fraud", ["u0007"]))  # Redis is down
        server.start()
        assert load_entities(server.url).returncode == 0
        session = ort.InferenceSession(str(MODEL_FILE), providers=["CPUExecutionProvider"])
        want = expected(session, [TABLE["u0007"]])
        assert not np.allclose(defaults, want, atol=1e-6)
        deadline = time.monotonic() + 15
        got = defaults
        while time.monotonic() < deadline and not np.allclose(got, want, atol=1e-6):
            time.sleep(0.2)  # the local cache keeps the defaults for local_ttl_ms
            got = probabilities(infer(running.url, "fraud", ["u0007"]))
        np.testing.assert_allclose(got, want, atol=1e-6)
    finally:
        stop_gateway(running)
        server.kill()
