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

    def read(self) -> dict[str, list[tuple[np.ndarray, int]]]:
        """The live other workers' totals, by version (``model/version``), each file
        read once."""
        found: dict[str, list[tuple[np.ndarray, int]]] = {}
        for path in self.directory.glob(f"{_PREFIX}*.json"):
            pid = path.name.removeprefix(_PREFIX).removesuffix(".json")
            if not pid.isdigit() or int(pid) == self.pid or not alive(int(pid)):
                continue
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                for key, saved in orjson.loads(path.read_bytes()).items():
                    counts = np.asarray(saved["counts"], dtype=np.int64)
                    found.setdefault(key, []).append((counts, int(saved["rows"])))
        return found

    def forget(self) -> None:
        (self.directory / f"{_PREFIX}{self.pid}.json").unlink(missing_ok=True)


class DriftMonitor:
    def __init__(self, registry: ModelRegistry, exchange: DriftExchange | None = None) -> None:
        self.registry = registry
        self.exchange = exchange

    def figures(self) -> Iterator[tuple[str, str, DriftFigures]]:
        """(model, version, figures) for every serving version with a window."""
        others = self._others()
        for version in _monitored(self.registry):
            assert version.drift is not None
            counts, rows = version.drift.combined(_extra(version, others))
            yield version.info.model, version.label, version.drift.measure(counts, rows)

    def report(self, model: str) -> dict[str, Any]:
        """``GET /admin/models/{model}/drift``."""
        served = self.registry.model(model)
        others = self._others()
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
            counts, rows = version.drift.combined(_extra(version, others))
            figures = version.drift.measure(counts, rows)
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
            windows[version.label] = (version, counts)
        return {
            "model": model,
            "versions": versions,
            "between_versions": _between(windows),
        }

    def _others(self) -> dict[str, list[tuple[np.ndarray, int]]]:
        return self.exchange.read() if self.exchange is not None else {}


def _extra(
    version: ModelVersion, others: dict[str, list[tuple[np.ndarray, int]]]
) -> list[tuple[np.ndarray, int]]:
    """The other workers' totals for ``version``, if binned as this worker bins it."""
    assert version.drift is not None
    size = version.drift.binner.size
    return [(c, rows) for c, rows in others.get(_key(version), []) if c.shape == (size,)]


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
