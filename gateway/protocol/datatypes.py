"""Tables that translate between OIP datatypes, numpy dtypes and ONNX tensor types."""

from __future__ import annotations

import numpy as np

# OIP datatype -> numpy dtype. BYTES tensors are numpy object arrays of ``bytes``.
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}

DATATYPES: tuple[str, ...] = tuple(NUMPY_DTYPES)

# onnxruntime's type strings ("tensor(float)") -> OIP datatype.
ONNX_TO_DATATYPE: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

_KIND_TO_PREFIX = {"b": "BOOL", "i": "INT", "u": "UINT", "f": "FP"}


_BY_DTYPE: dict[np.dtype, str] = {dtype: name for name, dtype in NUMPY_DTYPES.items()}


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype of a numpy array (object and string arrays are BYTES)."""
    dtype = array.dtype
    known = _BY_DTYPE.get(dtype)
    if known is not None:
        return known
    if dtype.kind in "OSU":
        return "BYTES"
    prefix = _KIND_TO_PREFIX.get(dtype.kind)
    if prefix is None:
        raise TypeError(f"no OIP datatype for numpy dtype {dtype}")
    return "BOOL" if prefix == "BOOL" else f"{prefix}{dtype.itemsize * 8}"
