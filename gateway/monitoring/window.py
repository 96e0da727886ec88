"""DriftWindow: one version's bin counts over the last ``window_s`` seconds.

Counts go into time slices (``SLICES`` per window); the window is the sum of the
slices younger than ``window_s``, so moving it forward drops whole slices instead
of remembering rows. Batches are observed from the inference threads (several per
version), so updates take a lock; each holds it for one vector add.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from gateway.monitoring.binning import Binner
from gateway.monitoring.psi import psi_by_column

SLICES = 10


@dataclass(frozen=True, slots=True)
class DriftFigures:
    """A window's figures: its rows, and each column's PSI (0 for all while the window
    has fewer than ``min_rows``: too few rows to judge)."""

    rows: int
    enough: bool
    psi: dict[str, float]

    @property
    def score(self) -> float:
        """The largest column PSI."""
        return max(self.psi.values(), default=0.0)


class DriftWindow:
    def __init__(
        self,
        binner: Binner,
        window_s: float,
        min_rows: int,
        now: Callable[[], float],
    ) -> None:
        self.binner = binner
        self.window_s = window_s
        self.min_rows = min_rows
        self._now = now
        self._slice_s = window_s / SLICES
        self._counts = np.zeros((SLICES, binner.size), dtype=np.int64)
        self._rows = np.zeros(SLICES, dtype=np.int64)
        self._stamps = np.full(SLICES, -1, dtype=np.int64)  # which slice of time each holds
        self._lock = threading.Lock()

    def observe(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Count one batch (its inputs after feature lookup, and its outputs)."""
        rows = next((a.shape[0] for a in arrays.values() if a.ndim), 0)
        counts = self.binner.counts(arrays)
        stamp = int(self._now() // self._slice_s)
        slot = stamp % SLICES
        with self._lock:
            if self._stamps[slot] != stamp:
                self._stamps[slot] = stamp
                self._counts[slot] = 0
                self._rows[slot] = 0
            self._counts[slot] += counts
            self._rows[slot] += rows

    def totals(self) -> tuple[np.ndarray, int]:
        """The window's counts and rows."""
        oldest = int(self._now() // self._slice_s) - SLICES + 1
        with self._lock:
            live = self._stamps >= oldest
            return self._counts[live].sum(axis=0), int(self._rows[live].sum())

    def combined(self, extra: list[tuple[np.ndarray, int]] | None = None) -> tuple[np.ndarray, int]:
        """The window's counts and rows with ``extra`` (other workers' totals) added."""
        counts, rows = self.totals()
        for other_counts, other_rows in extra or ():
            counts = counts + other_counts
            rows += other_rows
        return counts, rows

    def figures(self, extra: list[tuple[np.ndarray, int]] | None = None) -> DriftFigures:
        """The window's figures; ``extra``: other workers' totals to add in."""
        return self.measure(*self.combined(extra))

    def measure(self, counts: np.ndarray, rows: int) -> DriftFigures:
        """The figures of ``rows`` rows binned into ``counts``."""
        binner = self.binner
        enough = rows >= self.min_rows
        values = (
            psi_by_column(binner.reference, counts.astype(np.float64), binner.offsets)
            if enough
            else np.zeros(len(binner.names))
        )
        return DriftFigures(rows, enough, dict(zip(binner.names, values.tolist(), strict=True)))
