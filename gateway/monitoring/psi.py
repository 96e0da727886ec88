"""The population stability index between a reference distribution and observed counts.

PSI = sum over bins of (observed - reference) * ln(observed / reference), both as
fractions. An empty bin on either side would make it infinite, so fractions are
floored at ``FLOOR`` (the usual 0.0001): a bin the reference never saw still weighs,
heavily, without dividing by zero. Below 0.1 is stable, 0.1 to 0.25 moderate, above
0.25 drift.
"""

from __future__ import annotations

import numpy as np

FLOOR = 1e-4
MODERATE = 0.1
DRIFT = 0.25


def psi(reference: np.ndarray, observed: np.ndarray) -> float:
    """``reference``: fractions per bin; ``observed``: counts (or fractions) per bin."""
    total = observed.sum()
    if total <= 0:
        return 0.0
    actual = np.maximum(observed / total, FLOOR)
    expected = np.maximum(reference, FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def psi_by_column(reference: np.ndarray, observed: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """PSI of every column at once: ``reference`` and ``observed`` are every column's
    bins laid end to end, column j's from ``offsets[j]`` to ``offsets[j + 1]``."""
    totals = np.add.reduceat(observed, offsets[:-1])
    sizes = np.diff(offsets)
    per_bin_total = np.repeat(totals, sizes)
    with np.errstate(divide="ignore", invalid="ignore"):
        actual = np.maximum(np.where(per_bin_total > 0, observed / per_bin_total, 0.0), FLOOR)
    expected = np.maximum(reference, FLOOR)
    terms = (actual - expected) * np.log(actual / expected)
    result = np.add.reduceat(terms, offsets[:-1])
    return np.where(totals > 0, result, 0.0)
