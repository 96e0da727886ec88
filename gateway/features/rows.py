"""Entity rows from a CSV or JSONL file, each with its line number or what is wrong with it.

CSV: a header line, then one entity per line. JSONL: one JSON object per line,
whose values are numbers or strings (blank lines are skipped). The format comes
from the file name (``.jsonl``/``.ndjson`` is JSONL, anything else CSV).
Values are kept as text, the way Redis stores them.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(slots=True)
class Row:
    line: int
    values: dict[str, str] = field(default_factory=dict)
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
