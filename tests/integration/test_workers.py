"""`gateway serve --workers 2` as a real process group: /metrics sums both workers,
readiness speaks for the whole group, and a worker that dies is replaced."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import EXAMPLES, metric_value
from tests.gateway_process import serving

pytestmark = pytest.mark.integration

DIGITS = orjson.dumps({"instances": [[0] * 64]})
ROUNDS = 30
CLIENTS = 6
REQUESTS_PER_CLIENT = 5


class TwoWorkers:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def lines(self) -> list[dict[str, object]]:
        text = self.log.read_bytes()
        return [orjson.loads(x) for x in text.splitlines() if x.startswith(b"{")]

    def requests_by_pid(self) -> Counter[int]:
        return Counter(
            int(str(line["pid"])) for line in self.lines() if line["logger"] == "gateway.requests"
        )

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoWorkers]:
    tmp = tmp_path_factory.mktemp("workers")
    args = ["--workers", "2", "--log-level", "debug", "--log-format", "json"]
    # TMPDIR: where the workers' shared directory goes
    with serving(args, tmp / "gateway.log", env={"TMPDIR": str(tmp)}) as gateway:
        yield TwoWorkers(gateway.process, gateway.url, gateway.log)
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(timeout=60) == 0
    assert not list(tmp.glob("gateway-workers-*"))  # the shared directory went too


def _send_round(url: str) -> int:
    """CLIENTS connections at once, so both workers get some of them."""

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            for _ in range(REQUESTS_PER_CLIENT):
                response = http.post("/v1/models/digits:predict", content=DIGITS)
                assert response.status_code == 200

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return CLIENTS * REQUESTS_PER_CLIENT


def _wait_for_total(workers: TwoWorkers, expected: float) -> str:
    # each worker flushes its counts every second
    deadline = time.monotonic() + 15
    while True:
        text = workers.metrics()
        total = metric_value(text, "gateway_requests_total", model="digits", code="200")
        if total == expected or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def test_metrics_are_the_sum_over_workers(two_workers: TwoWorkers) -> None:
    sent = 0
    for _ in range(ROUNDS):
        sent += _send_round(two_workers.url)
        if len(two_workers.requests_by_pid()) == 2:
            break
    # a request's log line is written just after its response is sent
    deadline = time.monotonic() + 10
    while sum(two_workers.requests_by_pid().values()) < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    by_pid = two_workers.requests_by_pid()
    assert len(by_pid) == 2, f"all requests reached one worker: {by_pid}"
    assert sum(by_pid.values()) == sent
    text = _wait_for_total(two_workers, sent)
    assert metric_value(text, "gateway_requests_total", model="digits", code="200") == sent
    assert metric_value(text, "gateway_request_duration_seconds_count", model="digits") == sent
    # what is deployed, once per version (not once per worker)
    for version in (1, 2):
        sha256 = hashlib.sha256((EXAMPLES / "digits" / str(version) / "model.onnx").read_bytes())
        labels = {"model": "digits", "version": str(version), "sha256": sha256.hexdigest()}
        assert metric_value(text, "gateway_model_info", **labels) == 1
    build = [line for line in text.splitlines() if line.startswith("gateway_build_info{")]
    assert len(build) == 1 and build[0].endswith(" 1.0")
    depth = [line for line in text.splitlines() if line.startswith("gateway_queue_depth{")]
    assert len(depth) == 3  # digits v1, v2 and fraud v1: summed, no per-worker series
    assert all('pid="' not in line for line in text.splitlines())


def test_request_log_lines(two_workers: TwoWorkers) -> None:
    response = httpx.post(
        f"{two_workers.url}/v1/models/digits:predict",
        content=DIGITS,
        headers={"x-request-id": "log-me-1"},
        timeout=30,
    )
    assert response.status_code == 200
    deadline = time.monotonic() + 10
    while True:
        found = [line for line in two_workers.lines() if line.get("request_id") == "log-me-1"]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(found) == 1
    line = found[0]
    assert (line["model"], line["version"], line["protocol"], line["status"]) == (
        "digits",
        "2",
        "v1",
        200,
    )
    assert line["level"] == "debug"
    for key in ("duration_ms", "queue_ms", "inference_ms"):
        value = line[key]
        assert isinstance(value, float) and value >= 0, key


def test_readiness_waits_for_a_replaced_worker(two_workers: TwoWorkers) -> None:
    time.sleep(1.5)  # both workers have flushed what the earlier tests sent
    before = metric_value(two_workers.metrics(), "gateway_requests_total", model="digits")
    victim = max(two_workers.requests_by_pid().items(), key=lambda item: item[1])[0]
    os.kill(victim, signal.SIGKILL)
    statuses = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        statuses.append(httpx.get(f"{two_workers.url}/v2/health/ready", timeout=10).status_code)
        if statuses[-1] == 200 and 503 in statuses:
            break
        time.sleep(0.02)
    # not ready while the replacement loads its models; ready once it has
    assert 503 in statuses and statuses[-1] == 200, statuses[-20:]
    # what the dead worker counted still counts
    after = metric_value(two_workers.metrics(), "gateway_requests_total", model="digits")
    assert after >= before
