"""What drift monitoring reports: per serving version, its window's rows and the PSI of
each profiled column against its profile.json, and between live versions, the PSI of
their output distributions (A/B arms and shadow see the same population, so a
difference there is the versions disagreeing).

With several workers, each one's window totals are shared through the workers'
directory (``DriftExchange``), so any worker's answer covers all of them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from gateway.monitoring.psi import DRIFT, MODERATE, psi
from gateway.monitoring.window import DriftFigures
from gateway.processes import alive
from gateway.repository.registry import ModelRegistry
from gateway.repository.version import ModelVersion

TOP_COLUMNS = 5
_PREFIX = "drift-"


class DriftExchange:
    """Each worker's window totals, in the directory the workers share."""

    def __init__(self, directory: Path, pid: int | None = None) -> None:
        self.directory = directory
        self.pid = os.getpid() if pid is None else pid

    def publish(self, registry: ModelRegistry) -> None:
        """Write this worker's totals (every version with a window), replacing the last."""
        totals: dict[str, Any] = {}
        for version in _monitored(registry):
            assert version.drift is not None
            counts, rows = version.drift.totals()
            totals[_key(version)] = {"counts": counts, "rows": rows}
        path = self.directory / f"{_PREFIX}{self.pid}.json"
        aside = self.directory / f".{_PREFIX}{self.pid}.json.tmp"
        aside.write_bytes(orjson.dumps(totals, option=orjson.OPT_SERIALIZE_NUMPY))
        os.replace(aside, path)

    def others(self, version: ModelVersion) -> list[tuple[np.ndarray, int]]:
        """The live other workers' totals for ``version``."""
        found: list[tuple[np.ndarray, int]] = []
        key = _key(version)
        for path in self.directory.glob(f"{_PREFIX}*.json"):
            pid = path.name.removeprefix(_PREFIX).removesuffix(".json")
            if not pid.isdigit() or int(pid) == self.pid or not alive(int(pid)):
                continue
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                saved = orjson.loads(path.read_bytes())[key]
                counts = np.asarray(saved["counts"], dtype=np.int64)
                if version.drift is not None and counts.shape == (version.drift.binner.size,):
                    found.append((counts, int(saved["rows"])))
        return found

    def forget(self) -> None:
        (self.directory / f"{_PREFIX}{self.pid}.json").unlink(missing_ok=True)


class DriftMonitor:
    def __init__(self, registry: ModelRegistry, exchange: DriftExchange | None = None) -> None:
        self.registry = registry
        self.exchange = exchange

    def figures(self) -> Iterator[tuple[str, str, DriftFigures]]:
        """(model, version, figures) for every serving version with a window."""
        for version in _monitored(self.registry):
            yield version.info.model, version.label, self._figures(version)

    def report(self, model: str) -> dict[str, Any]:
        """``GET /admin/models/{model}/drift``."""
        served = self.registry.model(model)
        versions: dict[str, Any] = {}
        windows: dict[str, tuple[ModelVersion, np.ndarray]] = {}
        for number in sorted(served.versions):
            version = served.versions[number]
            if version.drift is None:
                versions[version.label] = {
                    "monitored": False,
                    "reason": version.drift_problem or "no profile.json beside its model.onnx",
                }
                continue
            figures = self._figures(version)
            ranked = sorted(figures.psi.items(), key=lambda item: item[1], reverse=True)
            versions[version.label] = {
                "monitored": True,
                "window_s": version.drift.window_s,
                "rows": figures.rows,
                "min_rows": version.drift.min_rows,
                "enough_rows": figures.enough,
                "score": round(figures.score, 6),
                "status": _status(figures),
                "top_columns": [name for name, value in ranked[:TOP_COLUMNS] if value > 0],
                "psi": {name: round(value, 6) for name, value in ranked},
            }
            windows[version.label] = (version, self._counts(version))
        return {
            "model": model,
            "versions": versions,
            "between_versions": _between(windows),
        }

    def _figures(self, version: ModelVersion) -> DriftFigures:
        assert version.drift is not None
        extra = self.exchange.others(version) if self.exchange is not None else None
        return version.drift.figures(extra)

    def _counts(self, version: ModelVersion) -> np.ndarray:
        assert version.drift is not None
        counts, _ = version.drift.totals()
        for other, _ in self.exchange.others(version) if self.exchange is not None else ():
            counts = counts + other
        return counts


def _between(windows: dict[str, tuple[ModelVersion, np.ndarray]]) -> list[dict[str, Any]]:
    """Per pair of live monitored versions, the PSI of each output column whose bins the
    two profiles share (a column binned differently cannot be compared bin by bin)."""
    pairs: list[dict[str, Any]] = []
    labels = sorted(windows, key=int)
    for i, first in enumerate(labels):
        for second in labels[i + 1 :]:
            a_version, a_counts = windows[first]
            b_version, b_counts = windows[second]
            assert a_version.drift is not None and b_version.drift is not None
            a, b = a_version.drift.binner, b_version.drift.binner
            outputs = set(a_version.signature.output_names)
            columns: dict[str, float] = {}
            for n, name in enumerate(a.names):
                if a.tensor_of[n] not in outputs or name not in b.names:
                    continue
                m = b.names.index(name)
                if a.edges_of[n] != b.edges_of[m]:
                    continue
                mine = a_counts[a.offsets[n] : a.offsets[n + 1]].astype(np.float64)
                theirs = b_counts[b.offsets[m] : b.offsets[m + 1]].astype(np.float64)
                if mine.sum() and theirs.sum():
                    columns[name] = round(psi(mine / mine.sum(), theirs), 6)
            pairs.append({"versions": [first, second], "psi": columns})
    return pairs


def _status(figures: DriftFigures) -> str:
    if not figures.enough:
        return "too few rows"
    score = figures.score
    return "drift" if score > DRIFT else "moderate" if score > MODERATE else "stable"


def _monitored(registry: ModelRegistry) -> Iterator[ModelVersion]:
    for served in registry.state.models.values():
        for version in served.versions.values():
            if version.drift is not None:
                yield version


def _key(version: ModelVersion) -> str:
    return f"{version.info.model}/{version.info.version}"
