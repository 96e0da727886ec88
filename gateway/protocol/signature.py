"""A model's tensor signature and the shape rules requests are checked against."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        # looked up on every request: build the indexes once
        object.__setattr__(self, "_inputs", {s.name: s for s in self.inputs})
        object.__setattr__(self, "_outputs", {s.name: s for s in self.outputs})
        object.__setattr__(self, "input_names", tuple(s.name for s in self.inputs))
        object.__setattr__(self, "output_names", tuple(s.name for s in self.outputs))

    _inputs: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)
    _outputs: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)
    input_names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    output_names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def input(self, name: str) -> TensorSpec | None:
        return self._inputs.get(name)

    def output(self, name: str) -> TensorSpec | None:
        return self._outputs.get(name)


def format_shape(shape: Sequence[int], limit: int = 8) -> str:
    """A shape for a message: at most ``limit`` dimensions, then how many there are."""
    shown = ", ".join(str(d) if -(2**63) <= d < 2**63 else "huge" for d in shape[:limit])
    if len(shape) > limit:
        return f"[{shown}, ... ({len(shape)} dimensions)]"
    return f"[{shown}]"


def check_shape(spec: TensorSpec, got: Sequence[int]) -> None:
    """Raise InvalidRequest unless ``got`` fits ``spec.shape`` (-1 matches any size)."""
    expected = spec.shape
    if len(got) == len(expected):
        # the common case: a dynamic batch dimension and fixed others (or a scalar)
        if not expected or (got[1:] == expected[1:] and expected[0] in (-1, got[0])):
            return
        for e, g in zip(expected, got, strict=True):
            if e != g and e != -1:
                break
        else:
            return
    raise InvalidRequest(
        f"input '{spec.name}': expected shape {format_shape(expected)} "
        f"(-1 = any size), got {format_shape(got)}"
    )


def check_datatype(spec: TensorSpec, got: str) -> None:
    if got != spec.datatype:
        raise InvalidRequest(f"input '{spec.name}': expected datatype {spec.datatype}, got {got}")
