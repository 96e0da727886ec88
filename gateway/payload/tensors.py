"""Tensors in a payload record, stored so that a replay is bit-exact.

A numeric tensor is ``{"datatype": "FP32", "shape": [2, 4], "b64": "..."}``: its raw
bytes, little-endian, in row-major order, base64-encoded, so every value (NaN
payloads, -0.0, subnormals) comes back as it was. A BYTES tensor lists each
element's bytes, base64-encoded: ``{"datatype": "BYTES", "shape": [2], "b64": ["...",
"..."]}``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from gateway.protocol.datatypes import NUMPY_DTYPES, datatype_of

# a logged shape larger than this is not a tensor a gateway answered
MAX_ELEMENTS = 1 << 28


def encode(array: np.ndarray) -> dict[str, Any]:
    if array.dtype.kind in "OSU":
        flat = [_as_bytes(value) for value in array.reshape(-1)]
        return {
            "datatype": "BYTES",
            "shape": list(array.shape),
            "b64": [base64.b64encode(value).decode("ascii") for value in flat],
        }
    datatype = datatype_of(array)
    raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return {
        "datatype": datatype,
        "shape": list(array.shape),
        "b64": base64.b64encode(raw).decode("ascii"),
    }


def decode(document: Mapping[str, Any]) -> np.ndarray:
    """The tensor back; ValueError (or KeyError, TypeError) for one that is not valid."""
    datatype = document["datatype"]
    shape = [int(n) for n in document["shape"]]
    if any(n < 0 for n in shape) or math.prod(shape) > MAX_ELEMENTS:
        raise ValueError(f"shape {shape} is not a tensor's")
    if datatype == "BYTES":
        values = [base64.b64decode(text, validate=True) for text in document["b64"]]
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    if datatype not in NUMPY_DTYPES:
        raise ValueError(f"unknown datatype {datatype!r}")
    dtype = NUMPY_DTYPES[datatype].newbyteorder("<")
    raw = base64.b64decode(document["b64"], validate=True)
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise ValueError(f"{len(raw)} bytes do not hold a {datatype} tensor of shape {shape}")
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")
