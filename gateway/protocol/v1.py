"""TF-Serving style ``:predict`` JSON: row (``instances``) and columnar (``inputs``) formats.

Unlike v2, the body carries no datatypes or shapes: both come from the model's
signature, so decoding needs it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from gateway.errors import InvalidRequest
from gateway.protocol.jsonbody import load_object
from gateway.protocol.signature import Signature, TensorSpec
from gateway.protocol.tensors import (
    MAX_DIMS,
    as_numeric_array,
    check_nesting,
    json_data,
    with_non_finite_words,
)

_ALLOWED_KEYS = {"instances", "inputs", "signature_name"}


@dataclass(slots=True)
class PredictRequest:
    inputs: dict[str, np.ndarray]
    row_format: bool  # answered as {"predictions": ...} when True, {"outputs": ...} otherwise


def decode_predict(body: bytes, signature: Signature) -> PredictRequest:
    doc = load_object(body, 'a JSON object with "instances" or "inputs"')
    unknown = sorted(set(doc) - _ALLOWED_KEYS)
    if unknown:
        raise InvalidRequest(
            f'unknown key(s) {", ".join(map(repr, unknown))}; expected "instances" or "inputs"'
        )
    if ("instances" in doc) == ("inputs" in doc):
        raise InvalidRequest('request body needs exactly one of "instances" or "inputs"')
    if "instances" in doc:
        return PredictRequest(_decode_instances(doc["instances"], signature), row_format=True)
    return PredictRequest(_decode_columns(doc["inputs"], signature), row_format=False)


def _decode_instances(instances: Any, signature: Signature) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise InvalidRequest(
            f'"instances" must be a non-empty list of rows, got {_kind(instances)}'
        )
    names = signature.input_names
    # TF Serving: {"b64": "..."} is a bytes value, so for a model whose one input is BYTES
    # such a row is a bare value rather than an object naming inputs
    b64_rows = len(names) == 1 and names[0] != "b64" and signature.inputs[0].datatype == "BYTES"
    if all(isinstance(row, dict) and not (b64_rows and _is_b64(row)) for row in instances):
        columns: dict[str, list[Any]] = {name: [] for name in names}
        for index, row in enumerate(instances):
            unknown = sorted(set(row) - set(names))
            if unknown:
                raise InvalidRequest(
                    f"instances[{index}]: unknown input(s) {', '.join(map(repr, unknown))}; "
                    f"the model's inputs are {', '.join(map(repr, names))}"
                )
            for name in names:
                if name not in row:
                    raise InvalidRequest(f"instances[{index}]: missing input '{name}'")
                columns[name].append(row[name])
    elif len(names) == 1:
        if any(isinstance(row, dict) and not (b64_rows and _is_b64(row)) for row in instances):
            raise InvalidRequest('"instances" mixes objects and bare values; use one form')
        columns = {names[0]: instances}
    else:
        raise InvalidRequest(
            f"the model has {len(names)} inputs ({', '.join(map(repr, names))}), so each "
            "instance must be an object naming them"
        )
    return {
        name: _column_array(signature.inputs[i], values)
        for i, (name, values) in enumerate(columns.items())
    }


def _decode_columns(inputs: Any, signature: Signature) -> dict[str, np.ndarray]:
    names = signature.input_names
    if isinstance(inputs, dict):
        unknown = sorted(set(inputs) - set(names))
        if unknown:
            raise InvalidRequest(
                f"unknown input(s) {', '.join(map(repr, unknown))}; "
                f"the model's inputs are {', '.join(map(repr, names))}"
            )
        missing = [name for name in names if name not in inputs]
        if missing:
            raise InvalidRequest(f"missing input(s) {', '.join(map(repr, missing))}")
        return {spec.name: _column_array(spec, inputs[spec.name]) for spec in signature.inputs}
    if len(names) != 1:
        raise InvalidRequest(
            f'the model has {len(names)} inputs, so "inputs" must be an object naming them'
        )
    return {names[0]: _column_array(signature.inputs[0], inputs)}


def _column_array(spec: TensorSpec, values: Any) -> np.ndarray:
    """One input's values, batch dimension first, as the model's dtype."""
    if spec.datatype == "BYTES":
        return _bytes_array(spec.name, values)
    check_nesting(spec.name, values)
    return as_numeric_array(spec.name, spec.datatype, values)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _bytes_array(name: str, values: Any) -> np.ndarray:
    """Strings and {"b64": ...} objects, nested evenly, as an object array of bytes.

    Iterative and bounded: the shape comes from the first element at each level (at most
    MAX_DIMS of them), then every list is checked against it on one pass."""
    shape: list[int] = []
    probe = values
    while isinstance(probe, list):
        if len(shape) == MAX_DIMS:
            check_nesting(name, values)  # raises: nested deeper than MAX_DIMS
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    rank = len(shape)
    flat: list[bytes] = []
    stack: list[tuple[Any, int]] = [(values, 0)]
    while stack:
        item, depth = stack.pop()
        if depth < rank:
            if not isinstance(item, list) or len(item) != shape[depth]:
                raise InvalidRequest(f"input '{name}': values must form an evenly shaped array")
            stack.extend((x, depth + 1) for x in reversed(item))
        else:
            flat.append(_bytes_value(name, item))
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _bytes_value(name: str, item: Any) -> bytes:
    if isinstance(item, str):
        return item.encode()
    if _is_b64(item) and isinstance(item["b64"], str):
        try:
            return base64.b64decode(item["b64"], validate=True)
        except ValueError:  # binascii.Error, or a non-ASCII string
            raise InvalidRequest(f"input '{name}': invalid base64 in {{\"b64\": ...}}") from None
    if isinstance(item, list):
        raise InvalidRequest(f"input '{name}': values must form an evenly shaped array")
    raise InvalidRequest(
        f"input '{name}': BYTES values must be strings or {{\"b64\": ...}}, got {_kind(item)}"
    )


def encode_predict(outputs: list[tuple[str, np.ndarray]], row_format: bool) -> bytes:
    payload = _encode(outputs, row_format, False)
    if b"null" in payload:  # orjson writes NaN and infinities as null: say which they were
        payload = _encode(outputs, row_format, True)
    return payload


def _encode(outputs: list[tuple[str, np.ndarray]], row_format: bool, words: bool) -> bytes:
    if not row_format:
        if len(outputs) == 1:
            return orjson.dumps({"outputs": _nested(outputs[0][1], words)}, option=_OPTIONS)
        return orjson.dumps(
            {"outputs": {n: _nested(a, words) for n, a in outputs}}, option=_OPTIONS
        )
    if len(outputs) == 1:
        return orjson.dumps({"predictions": _nested(outputs[0][1], words)}, option=_OPTIONS)
    rows = {len(a) if a.ndim else -1 for _, a in outputs}
    if len(rows) != 1 or -1 in rows:
        raise InvalidRequest(
            'the model\'s outputs do not share a batch dimension; send "inputs" '
            '(columnar) instead of "instances"'
        )
    # row i of a 1-D output is a numpy scalar, which orjson may not know (e.g. longlong)
    nested = [(n, a.tolist() if _plain_vector(a, words) else _nested(a, words)) for n, a in outputs]
    count = rows.pop()
    return orjson.dumps(
        {"predictions": [{n: value[i] for n, value in nested} for i in range(count)]},
        option=_OPTIONS,
    )


_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def _plain_vector(array: np.ndarray, words: bool) -> bool:
    """A 1-D numeric output whose ``tolist()`` orjson writes as it is (with ``words``:
    only if its floats are finite)."""
    if array.ndim != 1 or array.dtype.kind in "OSU":
        return False
    return not words or array.dtype.kind != "f" or bool(np.isfinite(array).all())


def _nested(array: np.ndarray, words: bool) -> Any:
    """The output as orjson should write it; ``words``: non-finite floats as the
    strings "NaN", "Infinity", "-Infinity" (else orjson writes null)."""
    if array.dtype.kind in "OSU":
        text = np.empty(array.size, dtype=object)
        text[:] = json_data(array)
        return text.reshape(array.shape).tolist()
    if words and array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            return with_non_finite_words(array, finite)
    if array.ndim == 0:
        return array[()]  # orjson writes numpy scalars, not 0-d arrays
    return np.ascontiguousarray(array)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
