"""Schema-driven requests from the Open Inference Protocol's OpenAPI document (schemathesis).

Schemathesis generates bodies, path parameters and headers for every v2 data-plane
operation the gateway implements; whatever arrives, the answer is never a 500 and,
for errors, a JSON ``{"error": ...}`` object.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.conftest import RunningGateway

pytestmark = pytest.mark.integration

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "openapi" / "oip-dataplane.json"


def _load_schema() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())

    def fix(node: Any) -> None:
        # the published document types raw tensor data as "bytes", which is not a JSON
        # Schema type; "string" is what such data looks like inside JSON
        if isinstance(node, dict):
            if node.get("type") == "bytes":
                node["type"] = "string"
            for value in node.values():
                fix(value)
        elif isinstance(node, list):
            for value in node:
                fix(value)

    fix(document)
    return document


# streaming and generate endpoints are not part of the gateway's API
schema = schemathesis.openapi.from_dict(_load_schema()).exclude(path_regex="stream|generate")

MODELS = ["digits", "types", "pair", "fixed", "lookup", "fraud", "broken", "badconfig", "nope"]
VERSIONS = ["1", "2", "0", "x"]


def _steer(value: object, choices: list[str]) -> str:
    """Map a generated name onto names the repository knows, so requests get past the 404."""
    text = str(value)
    return choices[zlib.crc32(text.encode()) % len(choices)]


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests(case: schemathesis.Case[Any], gateway: RunningGateway) -> None:
    parameters = case.path_parameters or {}
    if "model_name" in parameters:
        parameters["model_name"] = _steer(parameters["model_name"], MODELS)
    if "model_version" in parameters:
        parameters["model_version"] = _steer(parameters["model_version"], VERSIONS)
    response = case.call(base_url=gateway.url, timeout=30)
    # 503 (model not loaded) and 504 (deadline) are answers SPEC.md defines; 500 never is
    assert response.status_code < 500 or response.status_code in (503, 504), response.text
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}, response.text


@pytest.mark.parametrize(
    ("path", "schema_name"),
    [
        ("/v2", "MetadataServerResponse"),
        ("/v2/models/digits", "MetadataModelResponse"),
        ("/v2/models/digits/versions/1", "MetadataModelResponse"),
        ("/v2/models/fraud", "MetadataModelResponse"),  # with parameters.features
        ("/v2/models/fraud/versions/1", "MetadataModelResponse"),
    ],
)
def test_metadata_answers_match_the_schema(
    path: str, schema_name: str, gateway: RunningGateway
) -> None:
    document = _load_schema()
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    response = httpx.get(gateway.url + path, timeout=30)
    assert response.status_code == 200
    jsonschema.Draft202012Validator(schema).validate(response.json())
