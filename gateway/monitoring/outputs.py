"""Comparing two versions' outputs over a stretch of traffic (a rollout's step).

``OutputSample`` keeps the last ``capacity`` rows of each output tensor of one version
(its first ``MAX_SAMPLE_COLUMNS`` columns), in a ring per tensor: memory is bounded
whatever the traffic, and filling it is one slice copy per batch, done on the
inference thread that already holds the batch. ``output_psi`` bins the stable
version's sample and the canary's into the same bins (those of the stable version's
profile.json where it has the column, else the quantiles of the stable version's
own sample, as a profile would make them) and gives each column's PSI.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import numpy as np

from gateway.monitoring.profile import DEFAULT_BINS, bin_fractions, column_edges, column_names
from gateway.monitoring.psi import psi

SAMPLE_ROWS = 4096
MAX_SAMPLE_COLUMNS = 256  # per tensor: a 1000-class output is judged on its first 256
MIN_COMPARED_ROWS = 100  # fewer on either side: no figure, rather than a noisy one


class _Ring:
    def __init__(self, capacity: int, width: int) -> None:
        self.values = np.empty((capacity, width), dtype=np.float64)
        self.next = 0
        self.filled = 0

    def add(self, rows: np.ndarray) -> None:
        capacity = self.values.shape[0]
        rows = rows[-capacity:]
        end = self.next + rows.shape[0]
        if end <= capacity:
            self.values[self.next : end] = rows
        else:
            split = capacity - self.next
            self.values[self.next :] = rows[:split]
            self.values[: end - capacity] = rows[split:]
        self.next = end % capacity
        self.filled = min(self.filled + rows.shape[0], capacity)


class OutputSample:
    def __init__(self, capacity: int = SAMPLE_ROWS) -> None:
        self.capacity = capacity
        self._rings: dict[str, _Ring] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._lock = threading.Lock()

    def observe(self, outputs: Mapping[str, np.ndarray]) -> None:
        """Keep one batch's numeric outputs (a tensor whose row shape changed is
        skipped: its columns would no longer mean the same)."""
        for name, values in outputs.items():
            if values.dtype.kind not in "biuf" or values.ndim == 0:
                continue
            shape = values.shape[1:]
            matrix = values.reshape(values.shape[0], -1)[:, :MAX_SAMPLE_COLUMNS]
            with self._lock:
                ring = self._rings.get(name)
                if ring is None:
                    ring = self._rings[name] = _Ring(self.capacity, matrix.shape[1])
                    self._shapes[name] = shape
                elif self._shapes[name] != shape:
                    continue
                ring.add(matrix)

    def rows(self) -> dict[str, np.ndarray]:
        """A copy of the rows kept, per tensor (in no particular order)."""
        with self._lock:
            return {name: ring.values[: ring.filled].copy() for name, ring in self._rings.items()}

    def columns(self) -> dict[str, tuple[int, ...]]:
        with self._lock:
            return dict(self._shapes)


def output_psi(
    stable: OutputSample,
    canary: OutputSample,
    profile_edges: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, float] | None:
    """Per output column both samples have, the PSI of the canary's values against the
    stable version's; None while either has fewer than ``MIN_COMPARED_ROWS`` rows.
    ``profile_edges``: bin edges by column name, from the stable version's profile."""
    mine, theirs = stable.rows(), canary.rows()
    shapes, other_shapes = stable.columns(), canary.columns()
    compared: dict[str, float] = {}
    enough = False
    for tensor, reference in mine.items():
        observed = theirs.get(tensor)
        if observed is None or shapes[tensor] != other_shapes.get(tensor):
            continue
        if min(reference.shape[0], observed.shape[0]) < MIN_COMPARED_ROWS:
            continue
        enough = True
        names = column_names(tensor, shapes[tensor])[: reference.shape[1]]
        for index, name in enumerate(names):
            edges = (profile_edges or {}).get(name)
            if edges is None:
                edges = column_edges(reference[:, index], DEFAULT_BINS)[1]
            expected = np.asarray(bin_fractions(reference[:, index], edges))
            actual = np.asarray(bin_fractions(observed[:, index], edges))
            compared[name] = psi(expected, actual)
    return compared if enough else None
