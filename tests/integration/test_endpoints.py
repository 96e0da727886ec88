"""Health, metadata, readiness, status and metrics endpoints over real HTTP."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration

DIGIT_ROW = [0.0] * 64


def test_health(client: httpx.Client) -> None:
    live = client.get("/v2/health/live")
    assert live.status_code == 200 and live.json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}


def test_server_metadata(client: httpx.Client) -> None:
    body = client.get("/v2").json()
    assert body["name"] == "gateway"
    assert "binary_tensor_data" in body["extensions"]
    assert isinstance(body["version"], str)


def test_model_metadata(client: httpx.Client) -> None:
    body = client.get("/v2/models/digits").json()
    assert body == {
        "name": "digits",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
    }
    fraud = client.get("/v2/models/fraud/versions/1").json()
    assert [o["name"] for o in fraud["outputs"]] == ["probabilities", "label"]
    assert fraud["outputs"][1]["datatype"] == "INT64"


def test_version_metadata_lists_that_version_only(client: httpx.Client) -> None:
    """As Triton does: the model's path lists every loaded version, a version's path that
    version alone (with that version's inputs and outputs)."""
    assert client.get("/v2/models/digits").json()["versions"] == ["1", "2"]
    for version in ("1", "2"):
        body = client.get(f"/v2/models/digits/versions/{version}").json()
        assert body["versions"] == [version]
        assert body["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]


def test_metadata_of_a_model_with_features_names_its_entity_input(client: httpx.Client) -> None:
    """A client learns from the metadata that it may send user ids instead of the feature
    vector: the entity input and its datatype, the input it fills, the fields in column
    order, the key template and what an unknown entity gets. The inputs stay the
    model's own, so clients that send every listed input keep working."""
    for path in ("/v2/models/fraud", "/v2/models/fraud/versions/1"):
        body = client.get(path).json()
        assert body["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 6]}]
        assert body["parameters"]["features"] == {
            "entity_input": {"name": "user_id", "datatype": "BYTES", "shape": [-1]},
            "input": "features",
            "key": "user:{user_id}",
            "fields": [
                "age",
                "account_age_days",
                "balance",
                "txn_count_7d",
                "avg_txn_amount",
                "chargebacks_90d",
            ],
            "defaults": {
                "age": 41.0,
                "account_age_days": 604.0,
                "balance": 1913.4,
                "txn_count_7d": 6.0,
                "avg_txn_amount": 38.42,
                "chargebacks_90d": 0.0,
            },
            "missing": "default",
            "max_ids": 4096,
        }
    assert "parameters" not in client.get("/v2/models/digits").json()


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v2/models/digits/ready", 200, None),
        ("/v2/models/digits/versions/1/ready", 200, None),
        ("/v2/models/nope/ready", 404, "unknown model 'nope'"),
        ("/v2/models/digits/versions/3/ready", 404, "has no version 3"),
        ("/v2/models/broken/ready", 503, "has no loaded version"),
        ("/v2/models/badconfig", 503, "max_batch_size: expected an integer"),
        ("/v2/models/nope", 404, "unknown model 'nope'"),
        ("/v2/models/digits/versions/x", 404, "versions are positive integers"),
    ],
)
def test_readiness_and_metadata_errors(
    client: httpx.Client, path: str, status: int, message: str | None
) -> None:
    response = client.get(path)
    assert response.status_code == status
    if message is None:
        assert response.json()["ready"] is True
    else:
        assert message in response.json()["error"]


def test_tf_serving_model_status(client: httpx.Client) -> None:
    body = client.get("/v1/models/digits").json()
    assert [s["version"] for s in body["model_version_status"]] == ["2", "1"]
    assert all(s["state"] == "AVAILABLE" for s in body["model_version_status"])
    broken = client.get("/v1/models/broken").json()["model_version_status"]
    assert broken[0]["state"] == "END" and "protobuf" in broken[0]["status"]["error_message"]
    assert (
        client.get("/v1/models/digits/versions/1").json()["model_version_status"][0]["version"]
        == "1"
    )
    assert client.get("/v1/models/nope").status_code == 404


def test_request_id_is_echoed_or_generated(client: httpx.Client) -> None:
    body = {"instances": [DIGIT_ROW]}
    echoed = client.post("/v1/models/digits:predict", json=body, headers={"x-request-id": "abc-1"})
    assert echoed.headers["x-request-id"] == "abc-1"
    assert echoed.headers["x-model-version"] == "2"
    generated = client.post("/v1/models/digits/versions/1:predict", json=body)
    assert len(generated.headers["x-request-id"]) >= 16
    assert generated.headers["x-model-version"] == "1"
    failed = client.post("/v2/models/digits/infer", content=b"{", headers={"x-request-id": "e-2"})
    assert failed.status_code == 400
    assert failed.headers["x-request-id"] == "e-2"
    assert failed.headers["x-model-version"] == "2"
    missing = client.post("/v2/models/nope/infer", content=b"{}")
    assert missing.status_code == 404 and missing.headers["x-request-id"]


def test_unknown_paths_and_methods_answer_json(client: httpx.Client) -> None:
    response = client.get("/v3/whatever")
    assert response.status_code == 404
    assert "no endpoint at /v3/whatever" in response.json()["error"]
    response = client.post("/v2/health/live")
    assert response.status_code == 405
    assert response.json() == {"error": "POST is not allowed on /v2/health/live"}


def test_metrics_count_requests_by_answering_version(client: httpx.Client) -> None:
    client.post("/v1/models/digits/versions/1:predict", json={"instances": [DIGIT_ROW]})
    text = client.get("/metrics").text
    assert 'gateway_requests_total{code="200",model="digits",protocol="v1",version="1"}' in text
    assert "gateway_request_duration_seconds_bucket" in text
    assert 'gateway_model_loads_total{model="broken",outcome="failed",version="1"} 1.0' in text
