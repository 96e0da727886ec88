"""ModelInferRequest to the gateway's InferRequest, and outputs to a ModelInferResponse.

The same checks as the v2 JSON and binary paths (``gateway.protocol``), with the same
messages: shapes through ``parse_shape``, raw bytes through ``array_from_bytes``,
typed contents cast by ``cast_numeric`` (out-of-range integers refused). Answers
always carry ``raw_output_contents``: no per-element encoding at all.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gateway.errors import InvalidRequest
from gateway.protocol.datatypes import NUMPY_DTYPES, datatype_of
from gateway.protocol.signature import format_shape
from gateway.protocol.tensors import (
    array_from_bytes,
    cast_numeric,
    element_count,
    parse_shape,
    to_bytes,
)
from gateway.protocol.v2 import InferRequest, RequestedOutput
from gateway.rpc import messages

# which InferTensorContents field holds a datatype's typed elements (FP16 has none:
# it travels as raw bytes only)
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def decode_request(request: Any) -> InferRequest:
    """The InferRequest of a ModelInferRequest; InvalidRequest saying what is wrong."""
    if not request.inputs:
        raise InvalidRequest("'inputs' must be a non-empty list of tensors, got none")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one per input, in order, or none"
        )
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    for position, tensor in enumerate(request.inputs):
        name = tensor.name
        if not name:
            raise InvalidRequest(f"inputs[{position}] needs a 'name'")
        if name in inputs:
            raise InvalidRequest(f"input '{name}' is given more than once")
        datatype = tensor.datatype
        if datatype not in NUMPY_DTYPES:
            raise InvalidRequest(
                f"input '{name}': 'datatype' must be one of {', '.join(NUMPY_DTYPES)}, "
                f"got {datatype!r}"
            )
        shape = parse_shape(name, list(tensor.shape))
        if raw:
            if tensor.HasField("contents"):
                raise InvalidRequest(
                    f"input '{name}' has both contents and raw_input_contents; send one"
                )
            inputs[name] = array_from_bytes(name, datatype, shape, memoryview(raw[position]))
        else:
            inputs[name] = _typed(name, datatype, shape, tensor.contents)
        datatypes[name] = datatype
    outputs = [RequestedOutput(output.name, None) for output in request.outputs] or None
    return InferRequest(
        inputs=inputs,
        datatypes=datatypes,
        id=request.id or None,
        outputs=outputs,
        timeout_ms=_timeout(request.parameters),
    )


def _typed(name: str, datatype: str, shape: tuple[int, ...], contents: Any) -> np.ndarray:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidRequest(f"input '{name}': {datatype} travels as raw_input_contents only")
    values = getattr(contents, field)
    count = element_count(shape)
    if len(values) != count:
        raise InvalidRequest(
            f"input '{name}': shape {format_shape(shape)} holds {count} elements, but "
            f"contents.{field} has {len(values)}"
        )
    if count == 0:  # as an empty binary input: the same checks of its shape
        return array_from_bytes(name, datatype, shape, memoryview(b""))
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    if datatype == "BOOL":
        return np.array(values, dtype=np.bool_).reshape(shape)
    kind = NUMPY_DTYPES[datatype].kind
    wide = np.float64 if kind == "f" else (np.uint64 if kind == "u" else np.int64)
    return cast_numeric(name, datatype, np.array(values, dtype=wide)).reshape(shape)


def _timeout(parameters: Any) -> float | None:
    if "timeout_ms" not in parameters:
        return None
    parameter = parameters["timeout_ms"]
    choice = parameter.WhichOneof("parameter_choice")
    value: Any = getattr(parameter, choice) if choice else None
    if choice not in ("int64_param", "uint64_param", "double_param") or not value >= 0:
        raise InvalidRequest(
            f"parameter 'timeout_ms' must be a non-negative number of milliseconds, got {value!r}"
        )
    return float(value)


def encode_response(
    model: str, version: str, request_id: str | None, outputs: list[tuple[str, np.ndarray]]
) -> Any:
    response = messages.ModelInferResponse(
        model_name=model, model_version=version, id=request_id or ""
    )
    for name, array in outputs:
        response.outputs.add(name=name, datatype=datatype_of(array), shape=array.shape)
        response.raw_output_contents.append(to_bytes(array))
    return response
