"""Parsing a request body that must be one JSON object."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from gateway.errors import InvalidRequest

# the bare literals Python's json and rapidjson (so tritonclient) write for non-finite floats
_NON_FINITE_LITERALS = (b"NaN", b"Infinity")


def load_object(data: bytes | memoryview, expected: str) -> dict[str, Any]:
    """The body as a dict; ``expected`` describes the object for the error message."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        doc = _with_non_finite_literals(data)
        if doc is None:
            raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidRequest(f"request body must be {expected}, got {type(doc).__name__}")
    return doc


def _with_non_finite_literals(data: bytes | memoryview) -> Any:
    """The body parsed by Python's json, which also reads NaN, Infinity and -Infinity, when
    orjson refused it and it has such a literal; None when that fails too.

    Only bodies orjson refused come here. Python's parser is linear in the body, and
    numbers are read as orjson reads them: integers beyond 20 digits as floats, floats
    beyond the double range refused."""
    raw = bytes(data)
    if not any(literal in raw for literal in _NON_FINITE_LITERALS):
        return None
    try:
        return json.loads(raw, parse_int=_integer, parse_float=_number)
    except (ValueError, RecursionError):
        return None


def _integer(text: str) -> int | float:
    return int(text) if len(text) <= 20 else _number(text)


def _number(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value
