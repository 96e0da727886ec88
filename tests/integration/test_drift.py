"""Drift monitoring over HTTP (SPEC 12): the fraud example profiled from its own users,
then served traffic like them (every input column stable) and traffic with one feature
shifted (that column drifts, the others stay stable), seen in the admin report and in
/metrics; a profile that cannot be used never stops a version serving."""

from __future__ import annotations

import csv
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.cli.profile import build_version_profile
from gateway.config import Settings
from tests.conftest import EXAMPLES, RunningGateway, metric_value, start_gateway, stop_gateway
from tests.gateway_process import serving

pytestmark = pytest.mark.integration

TOKEN = "drift-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FIELDS = ["age", "account_age_days", "balance", "txn_count_7d", "avg_txn_amount", "chargebacks_90d"]
BALANCE = 2  # the column shifted


def _users() -> np.ndarray:
    with (EXAMPLES / "fraud" / "entities.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return np.asarray([[float(row[f]) for f in FIELDS] for row in rows], dtype=np.float32)


@pytest.fixture(scope="module")
def drift_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("drift")
    shutil.copytree(EXAMPLES / "fraud", root / "fraud")
    config = root / "fraud" / "model.toml"
    config.write_text(config.read_text() + "\n[monitoring]\nwindow_s = 120\nmin_rows = 500\n")
    build_version_profile(EXAMPLES / "fraud" / "entities.csv", root, "fraud", 1, 10)
    shutil.copytree(EXAMPLES / "digits", root / "digits")  # profiles with shared edges
    digits = root / "digits" / "model.toml"
    digits.write_text(
        digits.read_text()
        + '\n[routing]\nweights = { "1" = 1, "2" = 1 }\n\n[monitoring]\nmin_rows = 50\n'
    )
    shutil.copytree(root / "fraud", root / "unprofiled")
    (root / "unprofiled" / "1" / "profile.json").unlink()
    shutil.copytree(root / "fraud", root / "broken_profile")
    (root / "broken_profile" / "1" / "profile.json").write_text('{"format": 1, "rows": 3}')
    running = start_gateway(Settings(model_repository=root, admin_token=TOKEN))
    yield running
    stop_gateway(running)


def _body(rows: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": list(rows.shape),
                "data": rows.ravel().tolist(),
            }
        ]
    }


def _send(url: str, model: str, features: np.ndarray) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        for start in range(0, len(features), 50):
            body = _body(features[start : start + 50])
            assert http.post(f"/v2/models/{model}/infer", json=body).status_code == 200


def _report(url: str, model: str = "fraud") -> dict[str, Any]:
    response = httpx.get(f"{url}/admin/models/{model}/drift", headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def _inputs(psi: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in psi.items() if k.startswith("features[")}


def test_stable_traffic_then_one_shifted_feature(drift_gateway: RunningGateway) -> None:
    url = drift_gateway.url
    users = _users()
    before = _report(url)["versions"]["1"]
    assert before["monitored"] and before["rows"] == 0 and before["status"] == "too few rows"

    _send(url, "fraud", users)  # the profile's own population
    stable = _report(url)["versions"]["1"]
    assert stable["rows"] == len(users) and stable["enough_rows"]
    assert all(v < 0.1 for v in _inputs(stable["psi"]).values()), stable["psi"]
    assert stable["status"] == "stable"

    shifted = users.copy()
    shifted[:, BALANCE] *= 3  # balances tripled, three times as much traffic: the window
    for _ in range(3):  # (2 minutes) now holds a quarter of the old population
        _send(url, "fraud", shifted)
    report = _report(url)["versions"]["1"]
    inputs = _inputs(report["psi"])
    assert inputs[f"features[{BALANCE}]"] > 0.25, inputs
    assert all(v < 0.1 for k, v in inputs.items() if k != f"features[{BALANCE}]"), inputs
    assert report["top_columns"][0] == f"features[{BALANCE}]" or report["score"] > 0.25
    assert report["status"] == "drift"

    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    column = {"model": "fraud", "version": "1", "column": f"features[{BALANCE}]"}
    assert metric_value(metrics, "gateway_drift_psi", **column) > 0.25
    assert metric_value(metrics, "gateway_drift_score", model="fraud", version="1") > 0.25
    rows = metric_value(metrics, "gateway_drift_window_rows", model="fraud", version="1")
    assert rows == 4 * len(users)
    series = [line for line in metrics.splitlines() if line.startswith("gateway_drift_psi{")]
    fraud = [line for line in series if 'model="fraud"' in line]
    assert len(fraud) == 9  # 6 features, 2 probabilities, 1 label: bounded by the profile
    assert len(series) == 9 + 2 * 74  # and digits' two versions: 64 pixels, 10 outputs


def test_a_profile_that_cannot_be_used_never_stops_serving(drift_gateway: RunningGateway) -> None:
    url = drift_gateway.url
    _send(url, "broken_profile", _users()[:100])
    report = _report(url, "broken_profile")["versions"]["1"]
    assert report["monitored"] is False
    assert (
        "profile.json" in report["reason"]
        and "serving without drift monitoring" in report["reason"]
    )
    index = httpx.post(f"{url}/v2/repository/index", headers=AUTH, timeout=30).json()
    row = next(r for r in index if r["name"] == "broken_profile")
    assert row["state"] == "READY" and "not a profile" in row["reason"]


def test_a_model_without_a_profile_serves_unmonitored(drift_gateway: RunningGateway) -> None:
    url = drift_gateway.url
    _send(url, "unprofiled", _users()[:100])
    report = _report(url, "unprofiled")["versions"]["1"]
    assert report == {"monitored": False, "reason": "no profile.json beside its model.onnx"}
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    assert 'gateway_drift_score{model="unprofiled"' not in metrics


def test_drift_needs_a_known_model_and_the_token(drift_gateway: RunningGateway) -> None:
    url = drift_gateway.url
    assert httpx.get(f"{url}/admin/models/fraud/drift", timeout=30).status_code == 401
    missing = httpx.get(f"{url}/admin/models/nope/drift", headers=AUTH, timeout=30)
    assert missing.status_code == 404 and "unknown model 'nope'" in missing.json()["error"]


def test_the_versions_of_an_ab_split_are_compared(drift_gateway: RunningGateway) -> None:
    """Both digits versions see the same population (an even A/B split); their profiles
    share bin edges, so the report compares their outputs bin by bin."""
    url = drift_gateway.url
    rng = np.random.default_rng(3)
    with httpx.Client(base_url=url, timeout=30) as http:
        for _ in range(60):
            images = rng.integers(0, 17, size=(4, 64)).tolist()
            response = http.post("/v1/models/digits:predict", json={"instances": images})
            assert response.status_code == 200
    report = _report(url, "digits")
    assert set(report["versions"]) == {"1", "2"}
    assert all(v["monitored"] and v["rows"] > 0 for v in report["versions"].values())
    (pair,) = report["between_versions"]
    assert pair["versions"] == ["1", "2"]
    assert sorted(pair["psi"]) == sorted(f"probabilities[{i}]" for i in range(10))
    assert all(value >= 0 for value in pair["psi"].values())


def test_figures_cover_every_worker(tmp_path: Path) -> None:
    """With --workers 2 each worker bins what it served; any worker's answer adds the
    other's window (shared every second through the workers' directory)."""
    root = tmp_path / "models"
    shutil.copytree(EXAMPLES / "fraud", root / "fraud")
    users = _users()
    args = ["--model-repository", str(root), "--admin-token", TOKEN, "--workers", "2"]
    with serving(args, tmp_path / "gateway.log") as gateway:
        for start in range(0, 400, 50):  # a connection per request: both workers serve
            body = _body(users[start : start + 50])
            response = httpx.post(f"{gateway.url}/v2/models/fraud/infer", json=body, timeout=30)
            assert response.status_code == 200
        deadline = time.monotonic() + 15
        while True:  # every answer, whichever worker gives it, counts all 400 rows
            rows = {_report(gateway.url)["versions"]["1"]["rows"] for _ in range(6)}
            if rows == {400} or time.monotonic() > deadline:
                assert rows == {400}
                break
            time.sleep(0.3)
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(timeout=60) == 0
