"""The payload log (SPEC 14) with a real gateway: records of v2, v1, feature-backed,
A/B and shadowed requests carry every field; a replay of the log reproduces every
answer bit for bit, a replay on another version reports how it differs, a corrupt
line is reported and skipped; the Redis Stream sink round-trips, and a Redis that
goes away under load fails no request, is counted, and is written to again once it
is back."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from gateway.cli.profile import build_version_profile
from gateway.cli.replay import replay
from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.monitoring.profile import load_profile
from gateway.payload.record import LoggedRequest
from gateway.payload.replay import Unreadable, read_log
from gateway.payload.tensors import decode
from tests import onnx_models
from tests.conftest import EXAMPLES, ROOT, metric_value, start_gateway, stop_gateway
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.integration

PAIR_ROW = {"a": [1.0, 5.0, 2.0, 3.0], "b": [0, 1, 0, 0]}


def _repository(root: Path) -> Path:
    shutil.copytree(EXAMPLES / "digits", root / "digits")
    shutil.copytree(EXAMPLES / "fraud", root / "fraud")
    for name, routing in [
        ("ab", '[routing]\nweights = { "1" = 1, "2" = 1 }\n'),
        ("mirror", '[routing]\nweights = { "1" = 1 }\n[routing.shadow]\nversion = 2\n'),
    ]:
        onnx_models.write_model(root, name, 1, onnx_models.scaled_sum(1.0))
        onnx_models.write_model(root, name, 2, onnx_models.scaled_sum(2.0))
        onnx_models.write_config(root, name, f'[model]\nversions = "all"\n{routing}')
    return root


def _v2_pair(client: httpx.Client, model: str) -> httpx.Response:
    body = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": PAIR_ROW["a"]},
            {"name": "b", "datatype": "INT64", "shape": [1, 4], "data": PAIR_ROW["b"]},
        ]
    }
    return client.post(f"/v2/models/{model}/infer", json=body)


def _records(log: Path) -> list[dict[str, Any]]:
    lines = b"".join(p.read_bytes() for p in sorted(log.glob("payload-*.jsonl")))
    return [orjson.loads(line) for line in lines.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict[str, Any]]]:
    """A gateway with --payload-log file:///DIR, sent one request of each kind, then
    stopped (which writes what is queued); its repository, log and records."""
    tmp = tmp_path_factory.mktemp("payload")
    root = _repository(tmp / "models")
    log = tmp / "log"
    settings = Settings(
        model_repository=root,
        payload_log=f"file://{log}",
        features_file=EXAMPLES / "fraud" / "entities.csv",
    )
    gateway = start_gateway(settings)
    pixels = np.arange(64, dtype=np.float32) % 17
    try:
        headers = {"x-request-id": "r"}
        with httpx.Client(base_url=gateway.url, timeout=10, headers=headers) as client:
            v2 = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64],
                              "data": pixels.tolist()}]}  # fmt: skip
            assert client.post("/v2/models/digits/infer", json=v2).status_code == 200
            v1 = {"instances": [pixels.tolist()]}
            assert client.post("/v1/models/digits/versions/1:predict", json=v1).status_code == 200
            fraud = {"inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [1],
                                 "data": ["u0001"]}]}  # fmt: skip
            assert client.post("/v2/models/fraud/infer", json=fraud).status_code == 200
            for _ in range(4):
                assert _v2_pair(client, "ab").status_code == 200
            assert _v2_pair(client, "mirror").status_code == 200
            bad = {"instances": [[1.0]]}  # refused: not logged
            assert client.post("/v1/models/digits:predict", json=bad).status_code == 400
            time.sleep(0.5)  # the shadow run
    finally:
        stop_gateway(gateway)
    return root, log, _records(log)


def test_each_record_says_what_ran_which_version_answered_and_why(
    logged: tuple[Path, Path, list[dict[str, Any]]],
) -> None:
    _, _, records = logged
    assert len(records) == 8  # one per answered request; the refused one is not there
    by_model: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        assert record["schema"] == 1 and record["request_id"] == "r"
        assert record["time"].endswith("+00:00") and record["queue_s"] >= 0
        assert record["inference_s"] > 0
        by_model.setdefault(record["model"], []).append(record)
    v2, v1 = by_model["digits"]
    assert (v2["protocol"], v2["version"], v2["routing"]) == ("v2", "2", "default")
    assert (v1["protocol"], v1["version"], v1["routing"]) == ("v1", "1", "explicit")
    pixels = decode(v2["inputs"]["pixels"])
    assert pixels.dtype == np.float32 and pixels.shape == (1, 64)
    assert np.array_equal(pixels[0], np.arange(64, dtype=np.float32) % 17)
    assert set(v1["outputs"]) == {"probabilities"}
    (fraud,) = by_model["fraud"]
    assert set(fraud["inputs"]) == {"features"}  # as run: looked up, in place of the id
    assert decode(fraud["inputs"]["features"]).shape == (1, 6)
    features = fraud["features"]
    assert features["entity_input"] == "user_id"
    assert list(decode(features["ids"])) == [b"u0001"]
    assert (features["rows_from_store"], features["rows_defaulted"]) == (1, 0)
    assert {r["routing"] for r in by_model["ab"]} == {"weights"}
    (mirror,) = by_model["mirror"]
    assert mirror["version"] == "1" and mirror["shadow"]["version"] == "2"
    primary = decode(mirror["outputs"]["sum"])
    shadow = decode(mirror["shadow"]["outputs"]["sum"])
    assert np.array_equal(shadow, primary * 2)  # scaled_sum(2.0) against (1.0)


def test_a_replay_reproduces_every_answer_bit_for_bit(
    logged: tuple[Path, Path, list[dict[str, Any]]],
) -> None:
    root, log, records = logged
    report, status = replay(str(log), root)
    assert status == 0, report
    lines = report.splitlines()
    assert lines[0].split() == ["model", "logged", "ran", "records", "exact", "within",
                                "argmax_diff", "max_abs_diff"]  # fmt: skip
    rows = {tuple(line.split()[:3]): line.split()[3:] for line in lines[1:]}
    assert rows[("digits", "2", "2")] == ["1", "1", "1", "0", "0"]
    assert rows[("fraud", "1", "1")] == ["1", "1", "1", "0", "0"]
    total = sum(int(row[0]) for row in rows.values())
    assert total == len(records)
    # the same from the command line
    command = [sys.executable, "-m", "gateway", "replay", str(log), "--model-repository", str(root)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.splitlines()[0].startswith("model")


def test_a_replay_on_another_version_reports_the_difference(
    logged: tuple[Path, Path, list[dict[str, Any]]],
) -> None:
    root, log, _ = logged
    report, status = replay(str(log), root, model="mirror", version=2)
    assert status == 0, report  # what version 2 would have said: a question, not a failure
    row = report.splitlines()[1].split()
    assert row[:6] == ["mirror", "1", "2", "1", "0", "0"]  # not exact
    assert float(row[7]) > 0
    # a version that answered its requests but no longer reproduces them fails
    onnx_models.write_model(root, "mirror", 1, onnx_models.scaled_sum(-1.0))
    try:
        report, status = replay(str(log), root, model="mirror")
        assert status == 1 and report.splitlines()[1].split()[:6] == [
            "mirror", "1", "1", "1", "0", "0"
        ], report  # fmt: skip
        assert int(report.splitlines()[1].split()[6]) == 1  # the argmax moved
    finally:
        onnx_models.write_model(root, "mirror", 1, onnx_models.scaled_sum(1.0))


def test_a_corrupt_line_is_reported_by_number_and_skipped(
    logged: tuple[Path, Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    root, log, records = logged
    lines = b"".join(p.read_bytes() for p in sorted(log.glob("payload-*.jsonl"))).splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b"\n".join([lines[0], b'{"schema": 1, "model": "digits"', *lines[1:]]))
    items = list(read_log(str(broken)))
    unreadable = [item for item in items if isinstance(item, Unreadable)]
    assert len(unreadable) == 1 and unreadable[0].where == f"{broken} line 2"
    assert "not JSON" in unreadable[0].why
    assert sum(isinstance(item, LoggedRequest) for item in items) == len(records)
    report, status = replay(str(broken), root)
    assert status == 0 and f"skipped {broken} line 2: not JSON" in report


def test_the_redis_stream_sink_round_trips_and_outlives_an_outage(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis").start()
    root = _repository(tmp_path / "models")
    stream = f"redis://127.0.0.1:{redis_server.port}/payload-test"
    gateway = start_gateway(Settings(model_repository=root, payload_log=stream))
    codes: list[int] = []
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            for _ in range(20):
                assert _v2_pair(client, "ab").status_code == 200
            time.sleep(0.5)
            first = list(read_log(stream))
            assert len(first) == 20 and all(isinstance(r, LoggedRequest) for r in first)
            report, status = replay(stream, root)
            rows = [line.split() for line in report.splitlines()[1:]]
            assert status == 0 and sum(int(row[3]) for row in rows) == 20, report

            stop = threading.Event()

            def load() -> None:
                with httpx.Client(base_url=gateway.url, timeout=10) as loader:
                    for _ in range(3000):
                        if stop.is_set():
                            return
                        codes.append(_v2_pair(loader, "ab").status_code)

            worker = threading.Thread(target=load)
            worker.start()
            time.sleep(0.5)
            redis_server.kill()
            time.sleep(2.0)
            text = client.get("/metrics").text
            dropped = sum(
                metric_value(text, "gateway_payload_dropped_total", reason=reason)
                for reason in ("sink_error", "queue_full")
            )
            assert dropped > 0
            redis_server.start()  # empty: what it had is gone with it
            time.sleep(2.0)
            stop.set()
            worker.join(timeout=30)
            time.sleep(0.5)
            assert any(isinstance(r, LoggedRequest) for r in read_log(stream))  # writing again
    finally:
        stop_gateway(gateway)
        redis_server.kill()
    assert codes and set(codes) == {200}  # the outage failed no request


def test_a_profile_is_built_from_logged_traffic(
    logged: tuple[Path, Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    root, log, _ = logged
    repository = tmp_path / "models"
    shutil.copytree(root / "fraud", repository / "fraud")
    path, summary = build_version_profile(str(log), repository, "fraud", 1, 10)
    assert summary.startswith(f"profiled fraud version 1 on 1 rows of {log}")
    profile = load_profile(path)
    assert {column.tensor for column in profile.columns} >= {"features", "probabilities"}
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(ConfigError, match="has no records of model 'fraud' to profile"):
        build_version_profile(str(empty), repository, "fraud", 1, 10)
