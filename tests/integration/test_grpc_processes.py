"""gRPC against `gateway serve` as a real process: `--workers 2` share one gRPC port
(and their metrics), the health service answers, and SIGTERM under gRPC load answers
every request that was running when it came."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests import onnx_models
from tests.conftest import EXAMPLES, metric_value
from tests.gateway_process import free_port, serving

pytestmark = pytest.mark.integration

CLIENTS = 6
LOAD_BEFORE_SIGNAL_S = 1.5
MAX_REQUESTS_PER_CLIENT = 500


def _repository(root: Path) -> Path:
    shutil.copytree(EXAMPLES / "digits", root / "digits")
    onnx_models.write_slow_sum_model(root)
    return root


def _slow_inputs() -> list[grpcclient.InferInput]:
    a = grpcclient.InferInput("a", [1, 4], "FP32")
    a.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))
    b = grpcclient.InferInput("b", [1, 4], "INT64")
    b.set_data_from_numpy(np.ones((1, 4), dtype=np.int64))
    return [a, b]


def _health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        return int(check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)


def _wait_serving(address: str, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if _health(address, "") == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"gRPC at {address} never became SERVING")


def _grpc_requests_counted(url: str, expected: float, deadline_s: float = 15.0) -> float:
    """gateway_requests_total{protocol="grpc"} summed over the workers, once it reaches
    ``expected`` (each worker publishes its counts for the others every second)."""
    deadline = time.monotonic() + deadline_s
    while True:
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        counted = metric_value(metrics, "gateway_requests_total", protocol="grpc")
        if counted >= expected or time.monotonic() > deadline:
            return counted
        time.sleep(0.25)


def test_workers_share_the_port_and_sigterm_drains_grpc(tmp_path: Path) -> None:
    root = _repository(tmp_path / "models")
    grpc_port = free_port()
    address = f"127.0.0.1:{grpc_port}"
    args = ["--model-repository", str(root), "--workers", "2", "--grpc-port", str(grpc_port)]
    with serving([*args, "--log-level", "warning"], tmp_path / "gateway.log") as gateway:
        _wait_serving(address)
        assert _health(address, "liveness") == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            _health(address, "nope")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        pixels = grpcclient.InferInput("pixels", [1, 64], "FP32")
        pixels.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
        for _ in range(20):  # a new connection each time: the kernel spreads them
            with grpcclient.InferenceServerClient(address) as client:
                assert client.infer("digits", [pixels]).as_numpy("probabilities").shape == (1, 10)
        assert _grpc_requests_counted(gateway.url, 20) == 20

        outcomes: list[tuple[float, float, str]] = []  # (sent, answered, "ok" or the code)
        lock = threading.Lock()
        stop = threading.Event()

        def load() -> None:
            with grpcclient.InferenceServerClient(address) as client:
                for _ in range(MAX_REQUESTS_PER_CLIENT):
                    if stop.is_set():
                        return
                    sent = time.monotonic()
                    try:
                        client.infer("slowsum", _slow_inputs(), client_timeout=60)
                        result = "ok"
                    except InferenceServerException as exc:
                        result = str(exc.status())
                    with lock:
                        outcomes.append((sent, time.monotonic(), result))
                    if result != "ok":
                        return

        threads = [threading.Thread(target=load) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(LOAD_BEFORE_SIGNAL_S)
        signalled = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(timeout=60) == 0
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    # every request sent well before the signal reached a worker and was answered
    early = [result for sent, _, result in outcomes if sent < signalled - 0.2]
    assert early and set(early) == {"ok"}
    # and some were still running when it came: the drain answered them
    assert any(answered > signalled and result == "ok" for _, answered, result in outcomes)
