"""Binner: a batch's columns into the bins of their profile, one numpy pass per tensor.

Each column's bins are laid end to end in one flat count vector (``offsets``), so a
batch becomes one ``bincount``. Within a tensor, edges are padded to one width with
+inf, and a value's bin is the number of edges at or below it (what ``searchsorted``
gives), counted for all rows and columns at once, one comparison per edge position,
at most the column's top bin; NaN joins the top bin, as it does in the profile. No
Python loop runs per row or per column (measured: ``loadtests/drift_cost.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gateway.monitoring.profile import Profile

# above this many comparisons a batch is binned one edge position at a time
_BROADCAST_LIMIT = 1 << 12


@dataclass(frozen=True, slots=True)
class _TensorBins:
    name: str
    columns: np.ndarray  # the profiled positions in the flattened row, in profile order
    edges: np.ndarray  # [len(columns), width], padded with +inf
    top: np.ndarray  # per column: the index of its last bin
    offsets: np.ndarray  # per column: where its bins start in the flat vector
    every_column: bool  # the profile covers each position of the row, in order


class Binner:
    def __init__(self, profile: Profile) -> None:
        self.names = [column.name for column in profile.columns]
        self.tensor_of = [column.tensor for column in profile.columns]
        self.edges_of = [column.edges for column in profile.columns]
        sizes = [len(column.edges) + 1 for column in profile.columns]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.reference = np.concatenate([np.asarray(c.reference) for c in profile.columns])
        self.size = int(self.offsets[-1])
        by_tensor: dict[str, list[int]] = {}
        for position, column in enumerate(profile.columns):
            by_tensor.setdefault(column.tensor, []).append(position)
        self._tensors: list[_TensorBins] = []
        for tensor, positions in by_tensor.items():
            width = max(len(profile.columns[p].edges) for p in positions)
            edges = np.full((len(positions), width), np.inf)
            for row, p in enumerate(positions):
                column_edges = profile.columns[p].edges
                edges[row, : len(column_edges)] = column_edges
            columns = np.asarray([profile.columns[p].index for p in positions], dtype=np.int64)
            self._tensors.append(
                _TensorBins(
                    tensor,
                    columns,
                    edges,
                    np.asarray([len(profile.columns[p].edges) for p in positions]),
                    self.offsets[positions],
                    bool(np.array_equal(columns, np.arange(len(columns)))),
                )
            )
        self.tensors = frozenset(by_tensor)
        # every tensor at once, for the usual batch that has them all
        self._edges = _stacked([t.edges for t in self._tensors])
        self._top = np.concatenate([t.top for t in self._tensors])
        self._offsets = np.concatenate([t.offsets for t in self._tensors])

    def counts(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """Bin counts of a batch (every column's, end to end); a tensor missing from
        ``arrays``, not numeric or not of the profiled shape counts nothing."""
        parts: list[np.ndarray] = []
        used: list[_TensorBins] = []
        rows = -1
        for tensor in self._tensors:
            values = arrays.get(tensor.name)
            if values is None or values.dtype.kind not in "biuf" or values.ndim == 0:
                continue
            matrix = values.reshape(values.shape[0], -1)
            if matrix.shape[1] <= tensor.columns[-1] or rows not in (-1, matrix.shape[0]):
                continue
            rows = matrix.shape[0]
            parts.append(matrix if tensor.every_column else matrix[:, tensor.columns])
            used.append(tensor)
        if not used:
            return np.zeros(self.size, dtype=np.int64)
        if len(used) == len(self._tensors):
            edges, top, offsets = self._edges, self._top, self._offsets
        else:  # some tensor is not in this batch (an output not asked for, say)
            edges = _stacked([t.edges for t in used])
            top = np.concatenate([t.top for t in used])
            offsets = np.concatenate([t.offsets for t in used])
        values = np.concatenate(parts, axis=1, dtype=np.float64)
        bins = _positions(values, edges)
        np.minimum(bins, top, out=bins)
        if np.isnan(values).any():
            bins = np.where(np.isnan(values), top, bins)
        bins += offsets
        return np.bincount(bins.ravel(), minlength=self.size)


def _positions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """How many edges lie at or below each value (``searchsorted``'s answer), for every
    row and column at once: one broadcast comparison for a small batch, else one
    comparison per edge position (about a dozen), which needs no [rows, columns, edges]
    array."""
    if values.size * edges.shape[1] <= _BROADCAST_LIMIT:
        positions: np.ndarray = np.count_nonzero(values[:, :, None] >= edges[None, :, :], axis=2)
        return positions
    bins = np.zeros(values.shape, dtype=np.intp)
    for k in range(edges.shape[1]):
        bins += values >= edges[:, k]
    return bins


def _stacked(blocks: list[np.ndarray]) -> np.ndarray:
    """Edge matrices of different widths, one under the other, padded with +inf."""
    width = max(block.shape[1] for block in blocks)
    return np.vstack(
        [np.pad(b, ((0, 0), (0, width - b.shape[1])), constant_values=np.inf) for b in blocks]
    )
