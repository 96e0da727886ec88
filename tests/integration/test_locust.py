"""The locust scenarios, headless for a few seconds each against a live gateway: every
scenario sends requests and none fails."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import Settings
from tests import onnx_models
from tests.conftest import EXAMPLES, ROOT, RunningGateway, start_gateway, stop_gateway
from tests.gateway_process import free_port

pytestmark = pytest.mark.integration

SCENARIOS = {
    "V2JsonUser": "v2 json digits",
    "V2BinaryUser": "v2 binary digits",
    "V1PredictUser": "v1 predict digits",
    "FeatureUser": "v2 fraud by user id",
    "StickyABUser": "v2 sticky a/b",
    "DriftUser": "v2 fraud drifting",
    "GrpcUser": "grpc digits",
}


@pytest.fixture(scope="module")
def locust_gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningGateway, str]]:
    """The gateway, and the host:port of its gRPC server (for GrpcUser)."""
    root = tmp_path_factory.mktemp("locust")
    shutil.copytree(EXAMPLES / "digits", root / "digits")
    onnx_models.write_config(
        root,
        "digits",
        '[model]\nversions = "all"\n[routing]\nweights = { "1" = 1, "2" = 1 }\n'
        'sticky_key = "x-user-id"\n',
    )
    shutil.copytree(EXAMPLES / "fraud", root / "fraud")
    grpc_port = free_port()
    running = start_gateway(
        Settings(
            model_repository=root,
            features_file=EXAMPLES / "fraud" / "entities.csv",
            grpc_port=grpc_port,
        )
    )
    yield running, f"127.0.0.1:{grpc_port}"
    stop_gateway(running)


def run_locust(
    served: tuple[RunningGateway, str], out: Path, *selection: str, users: int = 5
) -> dict[str, dict[str, str]]:
    """Locust's stats rows by request name, after a headless run of a few seconds."""
    running, grpc_target = served
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py")]
    command += ["--headless", "-u", str(users), "-r", str(users), "-t", "4s"]
    command += ["--host", running.url, "--grpc-target", grpc_target]
    command += ["--csv", str(out / "run"), "--only-summary", "--stop-timeout", "5", *selection]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    with (out / "run_stats.csv").open(newline="") as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


def test_every_scenario_runs_without_failures(
    locust_gateway: tuple[RunningGateway, str], tmp_path: Path
) -> None:
    stats = run_locust(locust_gateway, tmp_path, *SCENARIOS, users=len(SCENARIOS))
    for name in SCENARIOS.values():
        assert int(stats[name]["Request Count"]) > 0, name
        assert int(stats[name]["Failure Count"]) == 0, name
    assert int(stats["Aggregated"]["Failure Count"]) == 0


def test_scenarios_are_selectable_by_tag(
    locust_gateway: tuple[RunningGateway, str], tmp_path: Path
) -> None:
    stats = run_locust(locust_gateway, tmp_path, "-T", "features", users=2)
    names = set(stats) - {"Aggregated"}
    assert names == {"v2 fraud by user id"}


def test_the_grpc_scenario_reports_grpc_requests(
    locust_gateway: tuple[RunningGateway, str], tmp_path: Path
) -> None:
    stats = run_locust(locust_gateway, tmp_path, "-T", "grpc", users=2)
    assert set(stats) - {"Aggregated"} == {"grpc digits"}
    row = stats["grpc digits"]
    assert row["Type"] == "grpc" and int(row["Request Count"]) > 0
    assert int(row["Failure Count"]) == 0
