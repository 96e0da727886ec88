"""`python -m gateway serve` as a user runs it: a real process, real port, real signals."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import orjson
import pytest

from tests.gateway_process import serving

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_then_exits_cleanly_on_sigterm(workers: int, tmp_path: Path) -> None:
    log_path = tmp_path / "gateway.log"
    args = ["--model-repository", "models", "--workers", str(workers)]
    with serving(args, log_path, env={"GATEWAY_LOG_FORMAT": "json"}) as gateway:
        for _ in range(4):
            response = httpx.post(
                f"{gateway.url}/v1/models/digits:predict",
                json={"instances": [[0] * 64]},
                timeout=10,
            )
            assert response.status_code == 200
            assert len(response.json()["predictions"][0]) == 10
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(timeout=30) == 0
    lines = [orjson.loads(line) for line in log_path.read_bytes().splitlines() if line.strip()]
    loaded = [line for line in lines if line["message"].startswith("loaded model digits")]
    assert len(loaded) == 2 * workers  # two versions, loaded by every worker
    assert all("color_message" not in line for line in lines)
