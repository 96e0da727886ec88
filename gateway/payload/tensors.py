"""Tensors in a payload record, stored so that a replay is bit-exact.

A numeric tensor is ``{"datatype": "FP32", "shape": [2, 4], "b64": "..."}``: its raw
bytes, little-endian, in row-major order, base64-encoded, so every value (NaN
payloads, -0.0, subnormals) comes back as it was. A BYTES tensor lists each
element's bytes, base64-encoded: ``{"datatype": "BYTES", "shape": [2], "b64": ["...",
"..."]}``.
"""

from __future__ import annotations

import base64
import binascii
import math
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from gateway.protocol.datatypes import NUMPY_DTYPES, datatype_of

# a logged shape larger than this is not a tensor a gateway answered
MAX_ELEMENTS = 1 << 28
# dtype and shape -> the text before a tensor's base64; bounded, as shapes vary by
# request (a batch of n rows is a new shape)
_HEADS_KEPT = 1024
_heads: dict[tuple[np.dtype[Any], tuple[int, ...]], bytes] = {}
LITTLE_ENDIAN = sys.byteorder == "little"  # a record's tensors are little-endian


def encode(array: np.ndarray) -> orjson.Fragment | dict[str, Any]:
    """The tensor's record form. A numeric tensor comes back already serialized (an
    ``orjson.Fragment``): the writer encodes thousands a second on the serving core,
    and building a dict per tensor cost more than the base64 itself."""
    if array.dtype.kind in "OSU":
        flat = [_as_bytes(value) for value in array.reshape(-1)]
        return {
            "datatype": "BYTES",
            "shape": list(array.shape),
            "b64": [base64.b64encode(value).decode("ascii") for value in flat],
        }
    head = tensor_head(array)
    if not array.dtype.isnative or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    elif not LITTLE_ENDIAN:
        array = array.astype(array.dtype.newbyteorder("<"))
    text = binascii.b2a_base64(array, newline=False)  # type: ignore[arg-type]  # a buffer
    return orjson.Fragment(head + text + b'"}')


def tensor_head(array: np.ndarray) -> bytes:
    """A numeric tensor's record text up to its base64 (``columns`` writes the same),
    kept by dtype and shape: a log holds few of each."""
    head = _heads.get((array.dtype, array.shape))
    if head is not None:
        return head
    head = b'{"datatype":%s,"shape":%s,"b64":"' % (
        orjson.dumps(datatype_of(array)),
        orjson.dumps(list(array.shape)),
    )
    if len(_heads) < _HEADS_KEPT:
        _heads[(array.dtype, array.shape)] = head
    return head


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
