"""Profile: per column of a version's inputs and outputs, bin edges and the fraction of
the reference sample in each bin (``profile.json`` beside ``model.onnx``).

A column is one position of a tensor's trailing dimensions: ``features[3]`` is the
fourth value of each row of input ``features``; a tensor of shape ``[n]`` is one
column named after it. BYTES tensors have no columns.

Bins, for a column with edges ``e0 < e1 < ... < ek``: bin 0 holds values below
``e0``, bin i holds ``[e(i-1), ei)``, bin k+1 values from ``ek`` up (and NaN). Quantile
columns take ``e0`` = the sample's minimum, then its deciles, and ``ek`` just above
its maximum, so the first and last bins hold what the reference never saw. A column
of few integer values (a label, a count) gets one bin per value instead: its edges
are the midpoints between them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from gateway.errors import ConfigError
from gateway.protocol.signature import Signature

PROFILE_FILE = "profile.json"
FORMAT = 1
DEFAULT_BINS = 10
MAX_CATEGORIES = 10  # an integer column with at most this many values is categorical
MAX_COLUMNS = 4096  # per version: bounds the series /metrics carries
# 4096 columns of 100 bins, written indented, take about 20 MiB: past this, not read
MAX_PROFILE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ColumnProfile:
    name: str  # "features[3]", or the tensor's name for a [n] tensor
    tensor: str
    index: int  # position in the tensor's flattened trailing dimensions
    kind: str  # "quantile" or "categorical"
    edges: tuple[float, ...]
    reference: tuple[float, ...]  # fraction of the sample per bin: len(edges) + 1

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tensor": self.tensor,
            "index": self.index,
            "kind": self.kind,
            "edges": list(self.edges),
            "reference": list(self.reference),
        }


@dataclass(frozen=True, slots=True)
class Profile:
    rows: int  # the reference sample's size
    columns: tuple[ColumnProfile, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "rows": self.rows,
            "columns": [column.to_json() for column in self.columns],
        }

    def save(self, path: Path) -> None:
        path.write_bytes(orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2))


def column_names(tensor: str, shape: Sequence[int]) -> list[str]:
    """The columns of a tensor whose rows have trailing ``shape`` (after the batch)."""
    count = math.prod(shape)
    if not shape:
        return [tensor]
    return [f"{tensor}[{i}]" for i in range(count)]


def build_profile(
    tensors: Mapping[str, np.ndarray],
    bins: int = DEFAULT_BINS,
    like: Profile | None = None,
) -> Profile:
    """The profile of a sample: ``tensors`` maps each numeric input and output name to
    its values, rows first (BYTES and other non-numeric tensors are left out). ``like``:
    another version's profile whose edges columns of the same name reuse, so that the
    two versions' live distributions can be compared bin by bin."""
    same = {column.name: column for column in like.columns} if like is not None else {}
    columns: list[ColumnProfile] = []
    rows = 0
    for tensor, values in tensors.items():
        if values.dtype.kind not in "biuf" or values.ndim == 0:
            continue
        rows = max(rows, values.shape[0])
        matrix = values.reshape(values.shape[0], -1).astype(np.float64)
        for index, name in enumerate(column_names(tensor, values.shape[1:])):
            column = matrix[:, index]
            shared = same.get(name)
            kind, edges = (shared.kind, shared.edges) if shared else column_edges(column, bins)
            reference = bin_fractions(column, edges)
            columns.append(ColumnProfile(name, tensor, index, kind, edges, reference))
    if len(columns) > MAX_COLUMNS:
        raise ConfigError(
            f"the sample has {len(columns)} numeric columns; a profile holds at most "
            f"{MAX_COLUMNS} (each becomes a series in /metrics)"
        )
    return Profile(rows, tuple(columns))


def column_edges(column: np.ndarray, bins: int) -> tuple[str, tuple[float, ...]]:
    finite = column[np.isfinite(column)]
    if finite.size == 0:
        return "quantile", (0.0,)
    distinct = np.unique(finite)
    if distinct.size <= MAX_CATEGORIES and np.all(distinct == np.round(distinct)):
        midpoints = (distinct[:-1] + distinct[1:]) / 2
        edges = np.concatenate([[distinct[0] - 0.5], midpoints, [distinct[-1] + 0.5]])
        return "categorical", tuple(float(e) for e in edges)
    inner = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    top = np.nextafter(finite.max(), np.inf)
    edges = np.unique(np.concatenate([[finite.min()], inner, [top]]))
    return "quantile", tuple(float(e) for e in edges)


def bin_fractions(column: np.ndarray, edges: Sequence[float]) -> tuple[float, ...]:
    counts = np.bincount(_bins(column, np.asarray(edges)), minlength=len(edges) + 1)
    total = max(int(counts.sum()), 1)
    return tuple(float(c) / total for c in counts)


def _bins(column: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # NaN sorts past every edge: the last bin, with what lies above the reference
    return np.searchsorted(edges, column, side="right")


def check_profile(profile: Profile, signature: Signature, path: Path) -> None:
    """ConfigError unless every column names a numeric input or output of the model (a
    ``Signature``) and a position its rows have."""
    tensors = {spec.name: spec for spec in (*signature.inputs, *signature.outputs)}
    for column in profile.columns:
        spec = tensors.get(column.tensor)
        if spec is None or spec.datatype == "BYTES":
            raise ConfigError(
                f"{path}: column {column.name!r} is of {column.tensor!r}, which is not a "
                f"numeric input or output of the model (it has {', '.join(sorted(tensors))})"
            )
        trailing = spec.shape[1:]
        width = math.prod(trailing) if all(d >= 0 for d in trailing) else None
        if width is not None and column.index >= width:
            raise ConfigError(
                f"{path}: column {column.name!r} is position {column.index} of "
                f"{column.tensor!r}, whose rows hold {width} values"
            )


def load_profile(path: Path) -> Profile:
    """Read and check ``profile.json``; ConfigError saying what is wrong otherwise."""
    try:
        size = path.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise ConfigError(
                f"{path}: {size} bytes; a profile holds at most {MAX_PROFILE_BYTES} bytes "
                f"({MAX_COLUMNS} columns)"
            )
        document = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON: {exc}") from None
    try:
        return _profile(document)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a profile (format {FORMAT}): {exc}") from None


def _profile(document: Any) -> Profile:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f'expected an object with "format": {FORMAT}')
    columns = []
    for n, raw in enumerate(document["columns"]):
        edges = tuple(float(e) for e in raw["edges"])
        reference = tuple(float(f) for f in raw["reference"])
        where = f"column {n} ({raw.get('name')!r})"
        if not edges or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ValueError(f"{where}: edges must be increasing")
        if len(reference) != len(edges) + 1:
            raise ValueError(
                f"{where}: {len(edges)} edges make {len(edges) + 1} bins, but "
                f"reference has {len(reference)} fractions"
            )
        if any(not (0 <= f <= 1) for f in reference) or not math.isclose(
            sum(reference), 1.0, abs_tol=1e-3
        ):
            raise ValueError(f"{where}: reference fractions must be in [0, 1] and sum to 1")
        kind = str(raw.get("kind", "quantile"))
        if kind not in ("quantile", "categorical"):
            raise ValueError(f"{where}: kind must be quantile or categorical, got {kind!r}")
        columns.append(
            ColumnProfile(
                str(raw["name"]), str(raw["tensor"]), int(raw["index"]), kind, edges, reference
            )
        )
    if len(columns) > MAX_COLUMNS:
        raise ValueError(f"{len(columns)} columns; at most {MAX_COLUMNS}")
    return Profile(int(document["rows"]), tuple(columns))
