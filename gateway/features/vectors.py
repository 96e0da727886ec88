"""From a request's entity ids and override inputs to the model's feature matrix; pure.

The caller sends ``entity_input`` (BYTES, shape [n] or [n, 1]) instead of the
model input ``input``, and may send any of the fields itself as a numeric input
of the same rows; those columns win over the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gateway.errors import InvalidRequest
from gateway.features.keys import parse_values
from gateway.protocol.datatypes import NUMPY_DTYPES


@dataclass(frozen=True, slots=True)
class FeatureRow:
    """One entity's features in field order, defaults filled in; ``found``: the store had
    the entity at all."""

    vector: np.ndarray
    found: bool


def defaults_vector(fields: Sequence[str], defaults: Mapping[str, float]) -> np.ndarray:
    return np.array([defaults.get(f, 0.0) for f in fields], dtype=np.float32)


def row_from_store(
    key: str, fields: Sequence[str], values: Sequence[bytes | str | None], defaults: np.ndarray
) -> FeatureRow:
    """The stored values of one HASH; absent fields take their defaults."""
    numbers, absent = parse_values(key, fields, values)
    if len(absent) == len(fields):
        return FeatureRow(defaults, found=False)
    if not absent:
        return FeatureRow(np.array(numbers, dtype=np.float32), found=True)
    vector = defaults.copy()
    for index, number in enumerate(numbers):
        if number is not None:
            vector[index] = number
    return FeatureRow(vector, found=True)


def entity_ids(name: str, array: np.ndarray, datatype: str) -> list[str]:
    """The ids a caller sent, as text."""
    if datatype != "BYTES":
        raise InvalidRequest(f"input '{name}' carries entity ids and must be BYTES, got {datatype}")
    shape = array.shape
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] == 0:
        raise InvalidRequest(
            f"input '{name}' must have shape [n] or [n, 1] with n >= 1 entity ids, "
            f"got {list(shape)}"
        )
    ids: list[str] = []
    for index, raw in enumerate(array.reshape(-1)):
        try:
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError:
            raise InvalidRequest(
                f"input '{name}' element {index} is not UTF-8 text; entity ids are strings"
            ) from None
        if not text:
            raise InvalidRequest(f"input '{name}' element {index} is an empty entity id")
        ids.append(text)
    return ids


def take_overrides(
    fields: Sequence[str],
    entity: str,
    rows: int,
    inputs: dict[str, np.ndarray],
    datatypes: dict[str, str],
) -> list[tuple[int, np.ndarray]]:
    """Remove the caller's field inputs from ``inputs``: (column, FP32 values) each."""
    overrides: list[tuple[int, np.ndarray]] = []
    for column, field in enumerate(fields):
        array = inputs.pop(field, None)
        if array is None:
            continue
        datatype = datatypes.pop(field)
        if datatype in ("BYTES", "BOOL") or datatype not in NUMPY_DTYPES:
            raise InvalidRequest(
                f"input '{field}' overrides a feature and must be numeric, got {datatype}"
            )
        shape = array.shape
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] != rows:
            raise InvalidRequest(
                f"input '{field}' overrides a feature: expected shape [{rows}] or [{rows}, 1] "
                f"(one value per id in '{entity}'), got {list(shape)}"
            )
        overrides.append((column, array.reshape(-1).astype(np.float32)))
    return overrides


def feature_matrix(
    rows: Sequence[FeatureRow], overrides: Sequence[tuple[int, np.ndarray]]
) -> np.ndarray:
    matrix = np.stack([row.vector for row in rows])
    for column, values in overrides:
        matrix[:, column] = values
    return matrix
