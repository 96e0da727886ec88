"""Binner: a batch's columns into the bins of their profile, one numpy pass per tensor.

Each column's bins are laid end to end in one flat count vector (``offsets``), so a
batch becomes one ``bincount``. Within a tensor, edges are padded to one width with
+inf, and a value's bin is the number of edges at or below it (what ``searchsorted``
gives, for all columns at once), at most the column's top bin; NaN joins the top bin,
as it does in the profile. No Python loop runs per row or per column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gateway.monitoring.profile import Profile


@dataclass(frozen=True, slots=True)
class _TensorBins:
    name: str
    columns: np.ndarray  # the profiled positions in the flattened row, in profile order
    edges: np.ndarray  # [len(columns), width], padded with +inf
    top: np.ndarray  # per column: the index of its last bin
    offsets: np.ndarray  # per column: where its bins start in the flat vector


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
            self._tensors.append(
                _TensorBins(
                    tensor,
                    np.asarray([profile.columns[p].index for p in positions], dtype=np.int64),
                    edges,
                    np.asarray([len(profile.columns[p].edges) for p in positions]),
                    self.offsets[positions],
                )
            )
        self.tensors = frozenset(by_tensor)

    def counts(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """Bin counts of a batch (every column's, end to end); a tensor missing from
        ``arrays`` or not numeric counts nothing."""
        flat: list[np.ndarray] = []
        for tensor in self._tensors:
            values = arrays.get(tensor.name)
            if values is None or values.dtype.kind not in "biuf" or values.ndim == 0:
                continue
            matrix = values.reshape(values.shape[0], -1)
            if matrix.shape[1] <= tensor.columns[-1]:
                continue  # not the profiled shape
            picked = matrix[:, tensor.columns].astype(np.float64, copy=False)
            # [rows, columns, width]: which edges lie at or below each value
            bins = (picked[:, :, None] >= tensor.edges[None, :, :]).sum(axis=2)
            bins = np.where(np.isnan(picked), tensor.top, np.minimum(bins, tensor.top))
            flat.append((bins + tensor.offsets[None, :]).ravel())
        if not flat:
            return np.zeros(self.size, dtype=np.int64)
        return np.bincount(np.concatenate(flat), minlength=self.size)
