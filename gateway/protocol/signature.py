"""A model's tensor signature and the shape rules requests are checked against."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output: ``shape`` uses -1 for every dynamic dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def has_batch_dim(self) -> bool:
        return len(self.shape) > 0 and self.shape[0] == -1

    def metadata(self) -> dict[str, object]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec | None:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    def output(self, name: str) -> TensorSpec | None:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        return None

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]


def format_shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_shape(spec: TensorSpec, got: Sequence[int]) -> None:
    """Raise InvalidRequest unless ``got`` fits ``spec.shape`` (-1 matches any size)."""
    expected = spec.shape
    if len(got) == len(expected) and all(e in (-1, g) for e, g in zip(expected, got, strict=True)):
        return
    raise InvalidRequest(
        f"input '{spec.name}': expected shape {format_shape(expected)} "
        f"(-1 = any size), got {format_shape(got)}"
    )


def check_datatype(spec: TensorSpec, got: str) -> None:
    if got != spec.datatype:
        raise InvalidRequest(f"input '{spec.name}': expected datatype {spec.datatype}, got {got}")
