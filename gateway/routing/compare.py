"""Comparing a shadow version's outputs with the primary's: pure numpy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Comparison:
    disagreeing_rows: int  # rows whose argmax of the first output differs
    rows: int
    max_abs_diff: float  # over every numeric output; nan when none is comparable
    mismatch: str | None = None  # outputs that cannot be compared at all

    @property
    def disagrees(self) -> bool:
        return self.disagreeing_rows > 0


def compare(
    names: Sequence[str], primary: Sequence[np.ndarray], shadow: Sequence[np.ndarray]
) -> Comparison:
    if len(primary) != len(shadow):
        return Comparison(0, 0, float("nan"), f"{len(shadow)} outputs instead of {len(primary)}")
    for name, a, b in zip(names, primary, shadow, strict=True):
        if a.shape != b.shape:
            return Comparison(
                0,
                0,
                float("nan"),
                f"output '{name}' has shape {list(b.shape)} instead of {list(a.shape)}",
            )
    first_a, first_b = primary[0], shadow[0]
    rows = int(first_a.shape[0]) if first_a.ndim else 1
    if first_a.ndim >= 2:
        # a class decision per row: the index of the largest score
        differ = first_a.reshape(rows, -1).argmax(axis=1) != first_b.reshape(rows, -1).argmax(
            axis=1
        )
    else:
        differ = np.atleast_1d(first_a != first_b)
    diffs = [
        float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
        for a, b in zip(primary, shadow, strict=True)
        if a.dtype.kind in "biuf"
    ]
    return Comparison(int(np.count_nonzero(differ)), rows, max(diffs) if diffs else float("nan"))
