"""Parsing a request body that must be one JSON object."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import InvalidRequest


def load_object(data: bytes | memoryview, expected: str) -> dict[str, Any]:
    """The body as a dict; ``expected`` describes the object for the error message."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidRequest(f"request body must be {expected}, got {type(doc).__name__}")
    return doc
