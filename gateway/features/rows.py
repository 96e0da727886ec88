"""Feature rows: from a request's entity ids to the model's feature matrix, and
entity rows read from CSV or JSONL files; pure.

The caller sends ``entity_input`` (BYTES, shape [n] or [n, 1]) instead of the
model input ``input``, and may send any of the fields itself as a numeric input
of the same rows; those columns win over the store (``feature_matrix``).

Files (``read_rows``, for the in-process store and ``gateway features load``): CSV
is a header line, then one entity per line; JSONL one JSON object per line, whose
values are numbers or strings (blank lines are skipped). The format comes from the
file name (``.jsonl``/``.ndjson`` is JSONL, anything else CSV). Values are kept as
text, the way Redis stores them.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import orjson

from gateway.errors import FeatureDataInvalid, InvalidRequest
from gateway.features.section import parse_values
from gateway.protocol.datatypes import NUMPY_DTYPES

_FP32_MAX = float(np.finfo(np.float32).max)
MAX_ID_BYTES = 256  # an entity id longer than this is refused (SPEC 10)
DEFAULT_MAX_IDS = 4096  # [features] max_ids


class FeatureRow(NamedTuple):
    """One entity's features in field order, defaults filled in; ``found``: the store had
    the entity at all. The vector is read-only: it is cached and shared between requests.
    (A NamedTuple: made for every fetched row, and cheaper to make than a dataclass.)"""

    vector: np.ndarray
    found: bool


def defaults_vector(fields: Sequence[str], defaults: Mapping[str, float]) -> np.ndarray:
    return _read_only(np.array([defaults.get(f, 0.0) for f in fields], dtype=np.float32))


def _read_only(vector: np.ndarray) -> np.ndarray:
    vector.flags.writeable = False
    return vector


def own_rows(table: np.ndarray) -> list[np.ndarray]:
    """The rows of a 2-D table, each a read-only array over its own small buffer rather
    than a view of the table: a cached row must not keep a whole fetch's reply alive."""
    data = table.tobytes()
    step = table.shape[1] * table.itemsize
    dtype = table.dtype
    return [np.frombuffer(data[i : i + step], dtype) for i in range(0, len(data), step)]


def row_from_store(
    key: str, fields: Sequence[str], values: Sequence[bytes | str | None], defaults: np.ndarray
) -> FeatureRow:
    """The stored values of one HASH; absent fields take their defaults."""
    if values.count(None) == len(fields):  # no such entity: the common case here
        return FeatureRow(defaults, found=False)
    numbers, absent = parse_values(key, fields, values)
    if len(absent) == len(fields):
        return FeatureRow(defaults, found=False)
    vector = defaults.copy()
    for index, number in enumerate(numbers):
        if number is None:
            continue
        if abs(number) > _FP32_MAX:  # finite as a double, too large for FP32
            raise FeatureDataInvalid(
                f"feature store: {key} field '{fields[index]}' holds a number out of the "
                "range of FP32"
            )
        vector[index] = number
    return FeatureRow(_read_only(vector), found=True)


def rows_from_replies(
    keys: Sequence[str],
    fields: Sequence[str],
    replies: Sequence[Sequence[bytes | str | None]],
    defaults: np.ndarray,
) -> list[FeatureRow | FeatureDataInvalid]:
    """Each key's row, or the error of a value that is not a number.

    Fast path: one numpy conversion of the whole reply, where every field is present
    and numeric; only the other rows are parsed one value at a time.
    """
    try:
        # absent fields (None) become NaN here, like a stored "nan", and numbers too large
        # for FP32 infinity: all of them take the slow path
        with np.errstate(over="ignore", invalid="ignore"):
            table = np.array(replies, dtype=np.float32)
    except (ValueError, TypeError):
        table = None
    complete: list[bool]
    if table is None or table.shape != (len(keys), len(fields)):
        complete = [False] * len(keys)
    else:
        complete = np.all(np.isfinite(table), axis=1).tolist()
    own = own_rows(table) if table is not None and any(complete) else []
    rows: list[FeatureRow | FeatureDataInvalid] = []
    for index, key in enumerate(keys):
        if complete[index]:
            rows.append(FeatureRow(own[index], found=True))
            continue
        try:
            rows.append(row_from_store(key, fields, replies[index], defaults))
        except FeatureDataInvalid as error:
            rows.append(error)
    return rows


def entity_ids(
    name: str, array: np.ndarray, datatype: str, max_ids: int = DEFAULT_MAX_IDS
) -> list[str]:
    """The ids a caller sent, as text: at most ``max_ids`` of them, each at most
    MAX_ID_BYTES bytes of UTF-8 (checked before anything looks them up)."""
    if datatype != "BYTES":
        raise InvalidRequest(f"input '{name}' carries entity ids and must be BYTES, got {datatype}")
    shape = array.shape
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] == 0:
        raise InvalidRequest(
            f"input '{name}' must have shape [n] or [n, 1] with n >= 1 entity ids, "
            f"got {list(shape)}"
        )
    if shape[0] > max_ids:
        raise InvalidRequest(
            f"input '{name}' carries {shape[0]} entity ids; a request may carry at most "
            f"{max_ids} ([features] max_ids)"
        )
    if shape[0] == 1:  # the common case first
        raw = array.flat[0]
        if type(raw) is bytes and raw and len(raw) <= MAX_ID_BYTES:
            try:
                return [raw.decode()]
            except UnicodeDecodeError:
                pass  # the loop below says what is wrong
    ids: list[str] = []
    for index, raw in enumerate(array.reshape(-1)):
        # the size first: a long id is refused before any more work is done on it
        size = len(raw) if isinstance(raw, bytes) else len(str(raw).encode(errors="replace"))
        if size > MAX_ID_BYTES:
            raise InvalidRequest(
                f"input '{name}' element {index} is an entity id of {size} bytes; "
                f"entity ids are at most {MAX_ID_BYTES} bytes"
            )
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
    """FP32 [len(rows), fields]; a single row without overrides is a view of the cached
    (read-only) vector, not a copy."""
    if len(rows) == 1 and not overrides:
        return rows[0].vector[np.newaxis]
    matrix = np.array([row.vector for row in rows])
    for column, values in overrides:
        matrix[:, column] = values
    return matrix


JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(slots=True)
class Row:
    line: int
    values: dict[str, str] = dataclasses.field(default_factory=dict)
    error: str | None = None


def read_rows(path: Path) -> Iterator[Row]:
    if path.suffix.lower() in JSONL_SUFFIXES:
        return _jsonl_rows(path)
    return _csv_rows(path)


def check_numbers(row: Row, id_column: str) -> Row:
    """The row, or the row marked bad: it needs a non-empty id and numeric features."""
    if row.error is not None:
        return row
    entity = row.values.get(id_column, "")
    if not entity.strip():
        row.error = f"no value in the id column '{id_column}'"
        return row
    for name, text in row.values.items():
        if name == id_column:
            continue
        try:
            number = float(text)
        except ValueError:
            row.error = f"'{name}' is {text[:40]!r}, not a number"
            return row
        if not math.isfinite(number):
            row.error = f"'{name}' is {text!r}, not a finite number"
            return row
    if len(row.values) < 2:
        row.error = "no feature columns besides the id"
    return row


def _csv_rows(path: Path) -> Iterator[Row]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        header = [name.strip() for name in header]
        for cells in reader:
            line = reader.line_num
            if not cells or cells == [""]:
                continue
            if len(cells) != len(header):
                yield Row(line, error=f"{len(cells)} values for {len(header)} columns")
                continue
            yield Row(line, {k: v.strip() for k, v in zip(header, cells, strict=True) if v.strip()})


def _jsonl_rows(path: Path) -> Iterator[Row]:
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield Row(line, error=f"not valid JSON ({exc})")
                continue
            if not isinstance(doc, dict):
                yield Row(line, error=f"expected a JSON object, got {type(doc).__name__}")
                continue
            values: dict[str, str] = {}
            for key, value in doc.items():
                if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                    if value is None:
                        continue  # null: the field is absent
                    yield Row(line, error=f"'{key}' must be a number or a string")
                    break
                values[key] = value if isinstance(value, str) else repr(value)
            else:
                yield Row(line, values)
