"""`python -m gateway serve` as a user runs it: a real process, real port, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gateway exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("gateway did not become ready")


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_then_exits_cleanly_on_sigterm(workers: int, tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "GATEWAY_PORT": str(port), "GATEWAY_LOG_FORMAT": "json"}
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--model-repository",
                "models",
                "--workers",
                str(workers),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, process)
            for _ in range(4):
                response = httpx.post(
                    f"{url}/v1/models/digits:predict", json={"instances": [[0] * 64]}, timeout=10
                )
                assert response.status_code == 200
                assert len(response.json()["predictions"][0]) == 10
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    lines = [orjson.loads(line) for line in log_path.read_bytes().splitlines() if line.strip()]
    loaded = [line for line in lines if line["message"].startswith("loaded model digits")]
    assert len(loaded) == 2 * workers  # two versions, loaded by every worker
    assert all("color_message" not in line for line in lines)
