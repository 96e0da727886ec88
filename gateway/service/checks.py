"""What the service checks before a request runs: its inputs against the version's
signature, agreeing batch sizes, and the outputs it asks for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from gateway.errors import InvalidRequest
from gateway.protocol.signature import Signature, check_datatype, check_shape
from gateway.protocol.v2 import RequestedOutput
from gateway.repository.version import ModelVersion


def check_inputs(
    signature: Signature, inputs: Mapping[str, np.ndarray], datatypes: Mapping[str, str]
) -> None:
    """Every model input present once, with the model's datatype and a fitting shape."""
    for name, array in inputs.items():
        spec = signature.input(name)
        if spec is None:
            raise InvalidRequest(
                f"unknown input '{name}'; the model's inputs are "
                + ", ".join(f"'{n}'" for n in signature.input_names)
            )
        check_datatype(spec, datatypes[name])
        check_shape(spec, array.shape)
    if len(inputs) != len(signature.inputs):  # every given name is known by now
        missing = [name for name in signature.input_names if name not in inputs]
        raise InvalidRequest(
            "missing input(s) "
            + ", ".join(f"'{n}'" for n in missing)
            + "; the model needs "
            + ", ".join(f"'{s.name}' ({s.datatype} {list(s.shape)})" for s in signature.inputs)
        )


def check_batch(target: ModelVersion, inputs: Mapping[str, np.ndarray]) -> None:
    """Inputs that are batched together must agree on their number of rows."""
    if not target.policy.batching or len(inputs) < 2:
        return
    rows = {name: a.shape[0] for name, a in inputs.items()}
    if len(set(rows.values())) > 1:
        listed = ", ".join(f"'{n}' has {r}" for n, r in rows.items())
        raise InvalidRequest(f"inputs must have the same number of rows (batch size): {listed}")


def select_outputs(
    signature: Signature, requested: Sequence[RequestedOutput] | None, binary_default: bool
) -> tuple[Sequence[str], list[bool]]:
    if requested is None:
        every = signature.output_names
        return every, [binary_default] * len(every)
    if not requested:
        raise InvalidRequest("'outputs' is an empty list; omit it to get every output")
    names: list[str] = []
    binary: list[bool] = []
    for output in requested:
        if signature.output(output.name) is None:
            raise InvalidRequest(
                f"unknown output '{output.name}'; the model's outputs are "
                + ", ".join(f"'{n}'" for n in signature.output_names)
            )
        if output.name in names:
            raise InvalidRequest(f"output '{output.name}' is requested more than once")
        names.append(output.name)
        binary.append(binary_default if output.binary is None else output.binary)
    return names, binary
