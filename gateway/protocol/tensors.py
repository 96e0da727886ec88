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
import orjson

from gateway.errors import InvalidRequest
from gateway.protocol.datatypes import NUMPY_DTYPES
from gateway.protocol.signature import format_shape

_LENGTH_PREFIX = struct.Struct("<I")
# SPEC 10: a shape has at most 32 dimensions, each in [0, 2^63); a tensor's bytes must also
# fit numpy's (signed 64-bit) sizes, which matters when a zero dimension hides huge others
MAX_DIMS = 32
DIM_LIMIT = 2**63
# the JSON words a non-finite float is written as, and read back from (proto3's JSON mapping)
NON_FINITE_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
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
    """A wire shape: a list of at most MAX_DIMS integers, each in [0, 2^63).

    O(len(shape)) and refused before any loop when it is too long, so a hostile shape
    costs no more than reading it did.
    """
    if not isinstance(shape, list):
        raise InvalidRequest(
            f"input '{name}': 'shape' must be a list of at most {MAX_DIMS} integers in "
            f"[0, 2^63), got {_show(shape)}"
        )
    if len(shape) > MAX_DIMS:
        raise InvalidRequest(
            f"input '{name}': 'shape' may have at most {MAX_DIMS} dimensions, got {len(shape)}"
        )
    for d in shape:
        if type(d) is not int or d < 0 or d >= DIM_LIMIT:
            raise InvalidRequest(
                f"input '{name}': every 'shape' dimension must be an integer in [0, 2^63), "
                f"got {_show(d)} in {_show(shape)}"
            )
    return tuple(shape)


def check_nesting(name: str, values: Any) -> None:
    """Refuse JSON values nested deeper than MAX_DIMS lists (one level per dimension).

    Follows the first element down, so it costs at most MAX_DIMS steps; ragged values
    deeper elsewhere are refused by numpy's own (bounded) shape discovery.
    """
    depth = 0
    while isinstance(values, list):
        depth += 1
        if depth > MAX_DIMS:
            raise InvalidRequest(
                f"input '{name}': values are nested more than {MAX_DIMS} lists deep; "
                f"a tensor has at most {MAX_DIMS} dimensions"
            )
        if not values:
            return
        values = values[0]


def _check_empty_shape(name: str, datatype: str, shape: tuple[int, ...]) -> None:
    """A shape with no elements can still name dimensions too large for any array."""
    size = NUMPY_DTYPES[datatype].itemsize
    for d in shape:
        if d:
            size *= d
    if size >= DIM_LIMIT:
        raise InvalidRequest(
            f"input '{name}': shape {format_shape(shape)} holds no elements, but its other "
            "dimensions describe a tensor of more than 2^63 bytes"
        )


def array_from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    """Build the array for JSON ``data`` (flat or nested, row-major) of ``shape``."""
    count = element_count(shape)
    if datatype == "BYTES":
        return _bytes_tensor(name, datatype, shape, _flatten_bytes(name, data))

    target = NUMPY_DTYPES[datatype]
    if target.kind == "f" and type(data) is list and len(data) == count and count:
        flat = _flat_floats(data, target)
        if flat is not None:
            return flat.reshape(shape)
    raw = _parse_numbers(name, datatype, data)
    if raw.size != count:
        raise _count_error(name, shape, count, raw.size)
    if count == 0:
        _check_empty_shape(name, datatype, shape)
        return np.zeros(shape, dtype=target)
    return cast_numeric(name, datatype, raw).reshape(shape)


def _flat_floats(data: list[Any], target: np.dtype) -> np.ndarray | None:
    """A flat list of JSON numbers as a float array, straight in ``target`` (the common
    request: numpy's own conversion first finds the list's shape and type, then casts);
    None for anything else, which the general path then takes and explains.

    ``sum`` refuses, in C and without building anything, every element that is not a
    number: strings (numeric ones included, which numpy would parse), null, lists and
    objects. A value too large for any float is refused too (OverflowError)."""
    try:
        sum(data)
        return np.fromiter(data, target, len(data))
    except (TypeError, ValueError, OverflowError):
        return None


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
    kind = NUMPY_DTYPES[datatype].kind
    if raw.dtype.kind in "fO" and kind in "iu":
        # numpy turns a mix of negative and above-int64 integers into float64 (or object);
        # rebuild exactly when every value really is an integer
        return _exact_integers(raw, values)
    if raw.dtype.kind in "UO" and kind == "f":
        # "NaN", "Infinity" and "-Infinity" among the numbers (JSON has no such literals)
        return _with_non_finite_words(raw, values)
    return raw


def _with_non_finite_words(raw: np.ndarray, values: Any) -> np.ndarray:
    """The floats of ``values`` when its only strings are the non-finite words, else
    ``raw`` (then reported as mixed or non-numeric values). Only requests that carry
    strings in float data come here: a Python loop over the elements is fine."""
    try:
        exact = np.array(values, dtype=object)
        converted: list[float] = []
        for value in exact.ravel().tolist():
            if type(value) is str:
                value = NON_FINITE_WORDS.get(value)
                if value is None:
                    return raw
            elif type(value) not in (int, float, bool):
                return raw
            converted.append(float(value))
        return np.array(converted, dtype=np.float64).reshape(exact.shape)
    except (ValueError, TypeError, OverflowError):
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
        return _bytes_tensor(name, datatype, shape, _split_length_prefixed(name, buffer))
    dtype = NUMPY_DTYPES[datatype].newbyteorder("<")
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise InvalidRequest(
            f"input '{name}': shape {format_shape(shape)} of {datatype} needs "
            f"{_count_text(expected)} bytes of binary data, got {len(buffer)}"
        )
    if count == 0:
        _check_empty_shape(name, datatype, shape)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def json_data(array: np.ndarray, words: bool = False) -> Any:
    """The flat, row-major JSON value of an output (numpy arrays go to orjson as is).

    Non-finite floats become the strings "NaN", "Infinity" and "-Infinity" (orjson would
    write null, which loses the sign of an infinity) when ``words`` is set. Encoders
    leave it unset and encode again with it only when their output holds a ``null``:
    looking for one in the encoded bytes costs less than checking every float output
    of every response."""
    if array.dtype.kind in "OSU":
        return [_text(item) for item in array.ravel().tolist()]
    flat = array.ravel()  # contiguous: a view of a contiguous array, else a copy
    if words and array.dtype.kind == "f":
        finite = np.isfinite(flat)
        if not finite.all():
            return with_non_finite_words(flat, finite)
    return flat


def with_non_finite_words(array: np.ndarray, finite: np.ndarray) -> Any:
    """``array`` as nested lists, its non-finite elements as NON_FINITE_WORDS strings.

    orjson writes the finite values (shortest repr of their own precision) and reads them
    back; only the non-finite elements are visited one by one."""
    if array.ndim == 0:
        return _non_finite_word(float(array))
    nested = orjson.loads(
        orjson.dumps(np.where(finite, array, 0), option=orjson.OPT_SERIALIZE_NUMPY)
    )
    for index in np.argwhere(~finite).tolist():
        row = nested
        for i in index[:-1]:
            row = row[i]
        row[index[-1]] = _non_finite_word(float(array[tuple(index)]))
    return nested


def _non_finite_word(value: float) -> str:
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


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


def _bytes_tensor(
    name: str, datatype: str, shape: tuple[int, ...], items: list[bytes]
) -> np.ndarray:
    count = element_count(shape)
    if len(items) != count:
        raise _count_error(name, shape, count, len(items))
    if count == 0:
        _check_empty_shape(name, datatype, shape)
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
        f"input '{name}': shape {format_shape(shape)} holds {_count_text(expected)} elements, "
        f"but 'data' has {got}"
    )


def _count_text(number: int) -> str:
    """A count for a message: in full below 2^63, else as a power of two (a huge int
    may not even be convertible to text: Python refuses more than 4300 digits)."""
    if -(2**63) <= number < 2**63:
        return str(number)
    return f"about 2^{abs(number).bit_length() - 1}"


def _show(value: Any, limit: int = 60) -> str:
    """A short preview of a JSON value for a message: bounded work whatever its size or
    depth (repr would recurse into deep nesting and refuse huge integers)."""
    text = _sketch(value, 3)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sketch(value: Any, depth: int) -> str:
    if isinstance(value, list):
        if depth == 0 or not value:
            return "[...]" if value else "[]"
        items = [_sketch(item, depth - 1) for item in value[:6]]
        if len(value) > 6:
            items.append(f"... ({len(value)} items)")
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        return "{...}" if value else "{}"
    if isinstance(value, str):
        return repr(value[:40] + "..." if len(value) > 40 else value)
    if isinstance(value, int) and not isinstance(value, bool):
        return _count_text(value)
    return repr(value) if isinstance(value, float | bool) or value is None else type(value).__name__
