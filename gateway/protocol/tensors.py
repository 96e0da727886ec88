"""Conversion between wire data (JSON values, raw bytes) and numpy arrays.

Every function here checks what it is given and raises ``InvalidRequest`` with a
message naming the tensor, what was expected and what arrived.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from gateway.errors import InvalidRequest
from gateway.protocol.datatypes import NUMPY_DTYPES

_LENGTH_PREFIX = struct.Struct("<I")
# numpy kinds a JSON array may parse into, per target datatype family
_ACCEPTED_KINDS = {"b": "b", "i": "biu", "u": "biu", "f": "biuf"}
_KIND_NAMES = {
    "b": "booleans",
    "i": "integers",
    "u": "integers",
    "f": "floating-point numbers",
    "U": "strings",
}


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def parse_shape(name: str, shape: Any) -> tuple[int, ...]:
    """A wire shape must be a list of non-negative integers."""
    valid = isinstance(shape, list)
    if valid:
        for d in shape:
            if type(d) is not int or d < 0:
                valid = False
                break
    if not valid:
        raise InvalidRequest(
            f"input '{name}': 'shape' must be a list of non-negative integers, got {_show(shape)}"
        )
    return tuple(shape)


def array_from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    """Build the array for JSON ``data`` (flat or nested, row-major) of ``shape``."""
    count = element_count(shape)
    if datatype == "BYTES":
        return _bytes_tensor(name, shape, _flatten_bytes(name, data))

    target = NUMPY_DTYPES[datatype]
    raw = _parse_numbers(name, datatype, data)
    if raw.size != count:
        raise _count_error(name, shape, count, raw.size)
    if count == 0:
        return np.zeros(shape, dtype=target)
    return cast_numeric(name, datatype, raw).reshape(shape)


def quiet_float_casts() -> None:
    """Let numeric casts overflow to +-inf without a RuntimeWarning, in this thread and in
    the event loop and request contexts started from it (numpy keeps this per context)."""
    np.seterr(over="ignore", invalid="ignore")


def as_numeric_array(name: str, datatype: str, values: Any) -> np.ndarray:
    """A nested JSON list as an array of ``datatype``, keeping the nesting as its shape."""
    raw = _parse_numbers(name, datatype, values)
    if raw.size == 0:
        return raw.astype(NUMPY_DTYPES[datatype])
    return cast_numeric(name, datatype, raw)


def _parse_numbers(name: str, datatype: str, values: Any) -> np.ndarray:
    try:
        raw = np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        raise InvalidRequest(
            f"input '{name}': 'data' must be a flat or evenly nested list of {datatype} "
            "values (every row the same length)"
        ) from None
    if raw.dtype.kind in "fO" and NUMPY_DTYPES[datatype].kind in "iu":
        # numpy turns a mix of negative and above-int64 integers into float64 (or object);
        # rebuild exactly when every value really is an integer
        return _exact_integers(raw, values)
    return raw


def _exact_integers(raw: np.ndarray, values: Any) -> np.ndarray:
    exact = np.array(values, dtype=object)
    flat = exact.ravel().tolist()
    if not flat or not all(type(v) is int for v in flat):
        return raw
    low, high = min(flat), max(flat)
    if (
        low < np.iinfo(np.int64).min
        or high > np.iinfo(np.uint64).max
        or (low < 0 and high > np.iinfo(np.int64).max)
    ):
        return exact  # object dtype: reported as out of range by cast_numeric
    dtype = np.uint64 if high > np.iinfo(np.int64).max else np.int64
    return np.array(flat, dtype=dtype).reshape(exact.shape)


def cast_numeric(name: str, datatype: str, raw: np.ndarray) -> np.ndarray:
    """Cast parsed JSON numbers to ``datatype``, refusing lossy kinds and out-of-range ints."""
    target = NUMPY_DTYPES[datatype]
    if raw.dtype.kind == "O" and target.kind in "iu" and _all_ints(raw):
        info = np.iinfo(target)
        raise InvalidRequest(
            f"input '{name}': {datatype} values must lie in [{info.min}, {info.max}]"
        )
    if raw.dtype.kind not in _ACCEPTED_KINDS[target.kind]:
        got = _KIND_NAMES.get(raw.dtype.kind, "mixed or non-numeric values")
        raise InvalidRequest(f"input '{name}': expected {datatype} values, got {got}")
    if target.kind in "iu" and raw.dtype != target:
        info = np.iinfo(target)
        low, high = raw.min(), raw.max()
        if low < info.min or high > info.max:
            raise InvalidRequest(
                f"input '{name}': {datatype} values must lie in [{info.min}, {info.max}], "
                f"got values in [{low}, {high}]"
            )
    # a float too large for the target becomes +-inf, as casting does. The server turns
    # numpy's overflow warning off once for its thread (quiet_float_casts, below):
    # np.errstate here would cost more than the cast itself
    return raw.astype(target, copy=False)


def _all_ints(raw: np.ndarray) -> bool:
    return all(type(v) is int for v in raw.ravel().tolist())


def array_from_bytes(
    name: str, datatype: str, shape: tuple[int, ...], buffer: memoryview
) -> np.ndarray:
    """Build the array for raw little-endian tensor bytes (Triton's binary extension)."""
    count = element_count(shape)
    if datatype == "BYTES":
        return _bytes_tensor(name, shape, _split_length_prefixed(name, buffer))
    dtype = NUMPY_DTYPES[datatype].newbyteorder("<")
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise InvalidRequest(
            f"input '{name}': shape {list(shape)} of {datatype} needs {expected} bytes "
            f"of binary data, got {len(buffer)}"
        )
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def json_data(array: np.ndarray) -> Any:
    """The flat, row-major JSON value of an output (numpy arrays go to orjson as is)."""
    if array.dtype.kind in "OSU":
        return [_text(item) for item in array.ravel().tolist()]
    return np.ascontiguousarray(array).ravel()


def to_bytes(array: np.ndarray) -> bytes:
    """Raw little-endian bytes of an output; BYTES elements are 4-byte length-prefixed."""
    if array.dtype.kind in "OSU":
        parts: list[bytes] = []
        for item in array.ravel().tolist():
            encoded = item if isinstance(item, bytes) else str(item).encode()
            parts.append(_LENGTH_PREFIX.pack(len(encoded)))
            parts.append(encoded)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _text(item: object) -> str:
    if isinstance(item, bytes):
        return item.decode("utf-8", "replace")
    return str(item)


def _bytes_tensor(name: str, shape: tuple[int, ...], items: list[bytes]) -> np.ndarray:
    count = element_count(shape)
    if len(items) != count:
        raise _count_error(name, shape, count, len(items))
    array = np.empty(count, dtype=object)
    array[:] = items
    return array.reshape(shape)


def _flatten_bytes(name: str, data: Any) -> list[bytes]:
    out: list[bytes] = []
    stack = [data]
    # iterative, so deeply nested garbage cannot exhaust the recursion limit
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item.encode())
        elif isinstance(item, list):
            stack.extend(reversed(item))
        else:
            raise InvalidRequest(
                f"input '{name}': BYTES data must be strings, got {type(item).__name__}"
            )
    return out


def _split_length_prefixed(name: str, buffer: memoryview) -> list[bytes]:
    items: list[bytes] = []
    offset, end = 0, len(buffer)
    while offset < end:
        if end - offset < 4:
            raise InvalidRequest(
                f"input '{name}': BYTES binary data ends inside a 4-byte length prefix"
            )
        (length,) = _LENGTH_PREFIX.unpack_from(buffer, offset)
        offset += 4
        if length > end - offset:
            raise InvalidRequest(
                f"input '{name}': BYTES element of {length} bytes runs past the end of "
                f"its binary data ({end - offset} bytes left)"
            )
        items.append(bytes(buffer[offset : offset + length]))
        offset += length
    return items


def _count_error(name: str, shape: Sequence[int], expected: int, got: int) -> InvalidRequest:
    return InvalidRequest(
        f"input '{name}': shape {list(shape)} holds {expected} elements, but 'data' has {got}"
    )


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
