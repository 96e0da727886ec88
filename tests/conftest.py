"""Shared fixtures: example repositories built in tmp dirs and a real uvicorn server."""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from gateway.app import create_app
from gateway.config import Settings
from gateway.server import GatewayServer, uvicorn_options
from tests import onnx_models

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "models"
SERVER_MAX_BODY = 4 * 1024 * 1024


@dataclass
class RunningGateway:
    url: str
    port: int
    repository: Path
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def authority(self) -> str:
        return f"127.0.0.1:{self.port}"


def build_test_repository(root: Path) -> Path:
    """Bundled examples plus models that exercise every datatype and failure path."""
    shutil.copytree(EXAMPLES / "digits", root / "digits")
    shutil.copytree(EXAMPLES / "fraud", root / "fraud")
    onnx_models.write_model(root, "types", 1, onnx_models.identity_all_types())
    onnx_models.write_model(root, "pair", 1, onnx_models.scaled_sum(1.0))
    onnx_models.write_model(root, "pair", 2, onnx_models.scaled_sum(2.0))
    onnx_models.write_config(root, "pair", '[model]\nversions = "all"\n')
    onnx_models.write_model(root, "fixed", 1, onnx_models.fixed_shape())
    onnx_models.write_model(root, "lookup", 1, onnx_models.lookup())
    onnx_models.write_model(root, "scalar", 1, onnx_models.scalar_scale())
    onnx_models.write_model(root, "text", 1, onnx_models.text_echo())
    onnx_models.write_model(root, "slow", 1, onnx_models.slow())
    onnx_models.write_config(
        root,
        "slow",
        "[runtime]\nintra_op_threads = 1\ninstances = 1\n\n[batching]\nmax_queue_size = 2\n",
    )
    broken = root / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"this is not an onnx file")
    onnx_models.write_model(root, "badconfig", 1, onnx_models.fixed_shape())
    onnx_models.write_config(root, "badconfig", '[batching]\nmax_batch_size = "lots"\n')
    return root


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples in a Prometheus exposition, over those whose labels
    include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def wait_for_metric(url: str, name: str, minimum: float, **labels: str) -> str:
    """The gateway's /metrics once ``name`` (with ``labels``) has reached ``minimum``;
    fails after 20 s."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics").text
        if metric_value(text, name, **labels) >= minimum:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{name} never reached {minimum}")


def start_gateway(settings: Settings, timeout_s: float = 60.0) -> RunningGateway:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # the gateway's own uvicorn options (its protocol, limits and timeouts), but quieter and
    # quicker to stop; host and port come with the socket
    options = uvicorn_options(settings)
    options.update(log_level="warning", timeout_graceful_shutdown=5)
    config = uvicorn.Config(create_app(settings), **options)
    server = GatewayServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.02)
    httpx.get(f"{url}/v2/health/live", timeout=5).raise_for_status()
    return RunningGateway(url, port, settings.model_repository, server, thread)


def stop_gateway(gateway: RunningGateway) -> None:
    gateway.server.should_exit = True
    gateway.thread.join(timeout=30)


@pytest.fixture(scope="session")
def test_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_test_repository(tmp_path_factory.mktemp("repository"))


@pytest.fixture(scope="session")
def gateway(test_repository: Path) -> Iterator[RunningGateway]:
    running = start_gateway(
        Settings(model_repository=test_repository, max_body_bytes=SERVER_MAX_BODY)
    )
    yield running
    stop_gateway(running)


@pytest.fixture
def client(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        yield http
