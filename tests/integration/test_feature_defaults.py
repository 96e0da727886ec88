"""Rows answered with the [features] defaults are visible: to the caller (header
x-feature-defaults), in the metrics (source="default"), in the request log line
(features_store, features_default) and in a rate-limited warning. The bundled fraud
example's defaults describe a typical legitimate user, not a fraudster."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import httpx
import pytest

from gateway.config import Settings
from tests.conftest import EXAMPLES, metric_value, start_gateway, stop_gateway

pytestmark = pytest.mark.integration

FRAUD_DEFAULTS = [41.0, 604.0, 1913.4, 6.0, 38.42, 0.0]  # models/fraud/model.toml


def by_ids(ids: list[str]) -> dict[str, object]:
    return {"inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [len(ids)], "data": ids}]}


def outputs(response: httpx.Response) -> dict[str, list[float]]:
    assert response.status_code == 200, response.text
    return {o["name"]: o["data"] for o in response.json()["outputs"]}


def test_answers_count_rows_that_got_the_defaults(client: httpx.Client) -> None:
    def defaulted() -> float:
        text = client.get("/metrics").text
        return metric_value(text, "gateway_feature_lookups_total", model="fraud", source="default")

    before = defaulted()
    # u0001 and u0042 are in models/fraud/entities.csv (the model's own store here)
    response = client.post("/v2/models/fraud/infer", json=by_ids(["u0001", "nobody", "u0042"]))
    assert response.headers["x-feature-defaults"] == "1"
    got = outputs(response)
    # the defaults are the medians of non-fraud users: an unknown user is not fraud
    assert got["label"] == [0, 0, 0]
    direct = client.post(
        "/v2/models/fraud/infer",
        json={
            "inputs": [
                {"name": "features", "datatype": "FP32", "shape": [1, 6], "data": FRAUD_DEFAULTS}
            ]
        },
    )
    assert "x-feature-defaults" not in direct.headers  # no ids, nothing looked up
    assert got["probabilities"][2:4] == pytest.approx(outputs(direct)["probabilities"], abs=1e-6)
    # again: "nobody" now comes from the local cache, and is still counted as defaults
    again = client.post("/v2/models/fraud/infer", json=by_ids(["nobody"]))
    assert again.headers["x-feature-defaults"] == "1"
    found = client.post("/v2/models/fraud/infer", json=by_ids(["u0001"]))
    assert found.headers["x-feature-defaults"] == "0"
    assert defaulted() - before == 2


def test_log_lines_count_rows_by_source_and_warn_about_unknown_entities(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(EXAMPLES / "fraud", tmp_path / "fraud")
    caplog.set_level(logging.DEBUG, logger="gateway.requests")  # before the app reads it
    running = start_gateway(Settings(model_repository=tmp_path))
    root = logging.getLogger()
    root.addHandler(caplog.handler)  # the app's log set-up replaced the root's handlers
    try:
        with httpx.Client(base_url=running.url, timeout=30) as http:
            ids = ["u0001", "ghost-1", "ghost-2", "u0002"]
            request = http.post(
                "/v2/models/fraud/infer", json=by_ids(ids), headers={"x-request-id": "ids-1"}
            )
            assert request.headers["x-feature-defaults"] == "2"
            http.post("/v2/models/fraud/infer", json=by_ids(["ghost-3"]))
    finally:
        stop_gateway(running)
        root.removeHandler(caplog.handler)
    line = next(r for r in caplog.records if getattr(r, "request_id", None) == "ids-1")
    assert line.name == "gateway.requests"
    fields = vars(line)  # the record's extra fields are attributes of its own
    assert (fields["features_store"], fields["features_default"]) == (2, 2)
    assert line.getMessage().endswith("; features: 2 from the store, 2 defaults")
    warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.features"]
    # the first at once; the second request's row waits for the next line (10 s later,
    # after this gateway has stopped), so there is exactly one here
    assert warnings == [
        "feature store, model fraud: 2 rows of entities not in the store (answered with "
        "the [features] defaults) in the last 0.0 s; last not in the store: user:ghost-1"
    ]
