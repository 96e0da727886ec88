"""Open Inference Protocol v2 request decoding and response encoding.

Covers JSON tensors and Triton's binary tensor data extension: a request or
response body may be a JSON header of ``Inference-Header-Content-Length`` bytes
followed by the raw tensors, in the order of the tensors that declare
``binary_data_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from gateway.errors import InvalidRequest
from gateway.protocol.datatypes import NUMPY_DTYPES, datatype_of
from gateway.protocol.jsonbody import load_object
from gateway.protocol.tensors import (
    array_from_bytes,
    array_from_json,
    json_data,
    parse_shape,
    to_bytes,
)

HEADER_LENGTH = "inference-header-content-length"
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: follow the request's binary_data_output


@dataclass(slots=True)
class InferRequest:
    """A decoded v2 request: named input arrays plus what the caller wants back."""

    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    id: str | None = None
    outputs: list[RequestedOutput] | None = None
    binary_output: bool = False
    timeout_ms: float | None = None


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse a v2 infer body; ``header_length`` is the raw header value, if any."""
    view = memoryview(body)
    if header_length is not None:
        json_end = _parse_header_length(header_length, len(body))
        header, binary = view[:json_end], view[json_end:]
    else:
        header, binary = view, None
    doc = load_object(header, "a JSON object with 'inputs'")
    return _decode_document(doc, binary)


def _decode_document(doc: dict[str, Any], binary: memoryview | None) -> InferRequest:
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequest(f"'id' must be a string, got {type(request_id).__name__}")
    raw_parameters = doc.get("parameters")
    parameters = _parameters(raw_parameters, "request") if raw_parameters is not None else None
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidRequest(
            "'inputs' must be a non-empty list of tensors "
            '({"name", "shape", "datatype", "data"}), got ' + _kind(raw_inputs)
        )
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    offset = 0
    for position, raw in enumerate(raw_inputs):
        name, datatype, array, used = _decode_input(position, raw, binary, offset)
        if name in inputs:
            raise InvalidRequest(f"input '{name}' is given more than once")
        inputs[name] = array
        datatypes[name] = datatype
        offset += used
    if binary is not None and offset != len(binary):
        raise InvalidRequest(
            f"binary data after the JSON header is {len(binary)} bytes, but the inputs' "
            f"binary_data_size values add up to {offset}"
        )
    raw_outputs = doc.get("outputs")
    outputs = None if raw_outputs is None else _decode_outputs(raw_outputs)
    if not parameters:  # as most requests: positional, and no parameter lookups
        return InferRequest(inputs, datatypes, request_id, outputs)
    return InferRequest(
        inputs,
        datatypes,
        request_id,
        outputs,
        _flag(parameters, "binary_data_output", "request"),
        _timeout(parameters),
    )


def _decode_input(
    position: int, raw: Any, binary: memoryview | None, offset: int
) -> tuple[str, str, np.ndarray, int]:
    if not isinstance(raw, dict):
        raise InvalidRequest(f"inputs[{position}] must be an object, got {_kind(raw)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"inputs[{position}] needs a string 'name', got {_kind(name)}")
    datatype = raw.get("datatype")
    if datatype not in NUMPY_DTYPES:
        raise InvalidRequest(
            f"input '{name}': 'datatype' must be one of {', '.join(NUMPY_DTYPES)}, got {datatype!r}"
        )
    shape = parse_shape(name, raw.get("shape"))
    raw_parameters = raw.get("parameters")
    size = None
    if raw_parameters:
        size = _parameters(raw_parameters, f"input '{name}'").get("binary_data_size")
    if size is None:
        if "data" not in raw:
            raise InvalidRequest(
                f"input '{name}' has neither 'data' nor parameters.binary_data_size"
            )
        return name, datatype, array_from_json(name, datatype, shape, raw["data"]), 0
    if type(size) is not int or size < 0:
        raise InvalidRequest(
            f"input '{name}': binary_data_size must be a non-negative integer, got {size!r}"
        )
    if binary is None:
        raise InvalidRequest(
            f"input '{name}' declares binary_data_size but the request has no "
            "Inference-Header-Content-Length header"
        )
    if "data" in raw:
        raise InvalidRequest(f"input '{name}' has both 'data' and binary_data_size; send one")
    if offset + size > len(binary):
        raise InvalidRequest(
            f"input '{name}': binary_data_size {size} runs past the end of the body "
            f"({len(binary) - offset} bytes left)"
        )
    chunk = binary[offset : offset + size]
    return name, datatype, array_from_bytes(name, datatype, shape, chunk), size


def _decode_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidRequest(f"'outputs' must be a list of {{\"name\"}} objects, got {_kind(raw)}")
    outputs: list[RequestedOutput] = []
    for position, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidRequest(
                f"outputs[{position}] must be an object with a string 'name', got {_kind(item)}"
            )
        name = item["name"]
        parameters = _parameters(item.get("parameters"), f"output '{name}'")
        if "classification" in parameters:
            raise InvalidRequest(
                f"output '{name}': the classification extension is not supported; "
                "ask for the raw output and take the top classes yourself"
            )
        binary = _flag(parameters, "binary_data", f"output '{name}'", default=None)
        outputs.append(RequestedOutput(name, binary))
    return outputs


def encode_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: list[tuple[str, np.ndarray]],
    binary: list[bool],
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, its JSON header length."""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for (name, array), as_binary in zip(outputs, binary, strict=True):
        entry: dict[str, Any] = {
            "name": name,
            "datatype": datatype_of(array),
            "shape": list(array.shape),
        }
        if as_binary:
            raw = to_bytes(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = json_data(array)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = entries
    header = orjson.dumps(doc, option=JSON_OPTIONS)
    if _has_null(header):  # NaN and infinities: say which they were
        for entry, (_, array) in zip(entries, outputs, strict=True):
            if "data" in entry:
                entry["data"] = json_data(array, words=True)
        header = orjson.dumps(doc, option=JSON_OPTIONS)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _has_null(header: bytes) -> bool:
    """Whether orjson wrote a null: only a non-finite float of a JSON output becomes one
    (strings, integers and booleans never do; a name that is "null" only costs a second
    encode with the same result).

    A search of the text (0.75 ns a byte), not numpy: above a few hundred elements numpy
    lets go of the GIL while it checks, and the inference thread, waiting for it, takes
    it in the middle of the request. On ``wide`` (1,000 floats out) an encode then took
    about 200 us of wall time in place, against 80 with the search."""
    return b"null" in header


def _parse_header_length(value: str, body_length: int) -> int:
    try:
        length = int(value)
    except ValueError:
        length = -1
    if length < 0 or length > body_length:
        raise InvalidRequest(
            "Inference-Header-Content-Length must be an integer between 0 and the body "
            f"length ({body_length}), got {value!r}"
        )
    return length


def _parameters(raw: Any, owner: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{owner}: 'parameters' must be an object, got {_kind(raw)}")
    return raw


def _flag(parameters: dict[str, Any], key: str, owner: str, default: bool | None = False) -> Any:
    value = parameters.get(key, default)
    if value is not default and not isinstance(value, bool):
        raise InvalidRequest(f"{owner}: parameter '{key}' must be true or false, got {value!r}")
    return value


def _timeout(parameters: dict[str, Any]) -> float | None:
    value = parameters.get("timeout_ms")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidRequest(
            f"parameter 'timeout_ms' must be a non-negative number of milliseconds, got {value!r}"
        )
    return float(value)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
