"""``gateway profile build``: a version's reference profile (``profile.json``) from a
sample of its inputs, with its outputs profiled by running the model on them.

The sample: ``.npy`` (the model's one input, rows first); CSV with a header (a model
with [features]: the columns named by its fields make the feature input; otherwise
every column, in order, makes the row of its one input); or JSONL, one object per
line keyed by input name (or, for a one-input model, a bare list per line).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import orjson

from gateway.errors import ConfigError
from gateway.monitoring.profile import PROFILE_FILE, build_profile, load_profile
from gateway.payload.replay import Unreadable, read_log
from gateway.protocol.datatypes import NUMPY_DTYPES
from gateway.protocol.signature import Signature, TensorSpec
from gateway.repository.session import OnnxModel
from gateway.repository.spec import ModelConfig, load_model_config

MAX_ROWS = 1_000_000
_CHUNK = 1024


def build_version_profile(
    data: Path | str,
    repository: Path,
    model: str,
    version: int,
    bins: int,
    edges_from: int | None = None,
) -> tuple[Path, str]:
    """Write the profile of ``model`` version ``version``; its path and a summary.
    ``edges_from``: another version whose profile's bin edges to reuse (so the drift
    report can compare the two versions' outputs)."""
    like = None
    if edges_from is not None:
        like = load_profile(repository / model / str(edges_from) / PROFILE_FILE)
    directory = repository / model / str(version)
    onnx_file = directory / "model.onnx"
    if not onnx_file.is_file():
        raise ConfigError(f"no {onnx_file}: expected model {model!r} version {version} there")
    config = load_model_config(repository / model / "model.toml")
    runtime = config.runtime.model_copy(update={"instances": 1})
    session = OnnxModel(onnx_file, runtime)
    if isinstance(data, Path):
        inputs = read_sample(data, session.signature, config)
    else:
        inputs = read_payload_sample(data, model, session.signature)
    rows = next(iter(inputs.values())).shape[0]
    outputs = _run(session, inputs, rows)
    profile = build_profile({**inputs, **outputs}, bins, like)
    path = directory / PROFILE_FILE
    profile.save(path)
    summary = (
        f"profiled {model} version {version} on {rows} rows of {data}: "
        f"{len(profile.columns)} columns ({len(inputs)} input and {len(outputs)} output "
        f"tensors) -> {path}"
    )
    return path, summary


def read_payload_sample(log: str, model: str, signature: Signature) -> dict[str, np.ndarray]:
    """The numeric inputs of ``model``'s records in a payload log (as they ran: features
    looked up), whichever version answered them, up to ``MAX_ROWS`` rows."""
    numeric = [spec for spec in signature.inputs if spec.datatype != "BYTES"]
    parts: dict[str, list[np.ndarray]] = {spec.name: [] for spec in numeric}
    rows = 0
    try:
        records = read_log(log)
        for record in records:
            if isinstance(record, Unreadable) or record.model != model:
                continue
            arrays = [record.inputs.get(spec.name) for spec in numeric]
            if any(a is None or a.ndim == 0 for a in arrays):
                continue  # not the inputs this version takes
            for spec, array in zip(numeric, arrays, strict=True):
                assert array is not None
                parts[spec.name].append(array.astype(NUMPY_DTYPES[spec.datatype], copy=False))
            rows += int(arrays[0].shape[0]) if arrays and arrays[0] is not None else 0
            if rows >= MAX_ROWS:
                break
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    if not rows:
        raise ConfigError(f"the payload log {log} has no records of model {model!r} to profile")
    try:
        return {name: np.concatenate(chunks)[:MAX_ROWS] for name, chunks in parts.items()}
    except ValueError as exc:  # rows of different shapes
        raise ConfigError(f"the payload log's {model} inputs do not line up: {exc}") from None


def read_sample(data: Path, signature: Signature, config: ModelConfig) -> dict[str, np.ndarray]:
    """The sample as the model's inputs (numeric ones; in the model's dtypes)."""
    if not data.is_file():
        raise ConfigError(f"no such file: {data}")
    numeric = [s for s in signature.inputs if s.datatype != "BYTES"]
    if data.suffix.lower() == ".npy":
        only = _only_input(numeric, data)
        try:
            array = np.load(data, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{data}: not a .npy array: {exc}") from None
        return {only.name: _checked(only, array, data)}
    if data.suffix.lower() in (".jsonl", ".ndjson"):
        return _from_jsonl(data, numeric)
    return _from_csv(data, numeric, config)


def _only_input(numeric: list[TensorSpec], data: Path) -> TensorSpec:
    if len(numeric) != 1:
        names = ", ".join(s.name for s in numeric)
        raise ConfigError(
            f"{data}: a CSV or .npy sample fills one input, but the model takes {names}; "
            "use JSONL with one object per row keyed by input name"
        )
    return numeric[0]


def _from_csv(data: Path, numeric: list[TensorSpec], config: ModelConfig) -> dict[str, np.ndarray]:
    features = config.features
    with data.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ConfigError(f"{data}: empty; expected a header line, then one row per line")
        if features is not None:
            missing = [f for f in features.fields if f not in header]
            if missing:
                raise ConfigError(f"{data}: no column(s) {missing} for [features] fields")
            spec = next(s for s in numeric if s.name == features.input)
            picks = [header.index(f) for f in features.fields]
        else:
            spec = _only_input(numeric, data)
            picks = list(range(len(header)))
        rows = [[_number(row[i], data, n) for i in picks] for n, row in _limited(reader)]
    return {spec.name: _checked(spec, np.asarray(rows), data)}


def _from_jsonl(data: Path, numeric: list[TensorSpec]) -> dict[str, np.ndarray]:
    columns: dict[str, list[object]] = {s.name: [] for s in numeric}
    with data.open("rb") as handle:
        for n, line in _limited(handle):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{data} line {n}: not JSON: {exc}") from None
            if isinstance(row, list):
                row = {_only_input(numeric, data).name: row}
            if not isinstance(row, dict):
                raise ConfigError(f"{data} line {n}: expected an object keyed by input name")
            for name, values in columns.items():
                if name not in row:
                    raise ConfigError(f"{data} line {n}: no input {name!r}")
                values.append(row[name])
    return {s.name: _checked(s, np.asarray(columns[s.name]), data) for s in numeric}


def _checked(spec: TensorSpec, array: np.ndarray, data: Path) -> np.ndarray:
    expected = tuple(spec.shape[1:])
    got = tuple(array.shape[1:])
    fits = len(expected) == len(got) and all(
        e in (-1, g) for e, g in zip(expected, got, strict=True)
    )
    if array.ndim == 0 or array.shape[0] == 0 or not fits:
        raise ConfigError(
            f"{data}: input {spec.name!r} takes rows of shape {list(expected)}, "
            f"the sample has {list(array.shape)}"
        )
    try:
        return array.astype(NUMPY_DTYPES[spec.datatype])
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{data}: input {spec.name!r} needs numbers: {exc}") from None


T = TypeVar("T")


def _limited(lines: Iterator[T]) -> Iterator[tuple[int, T]]:
    for n, line in enumerate(lines, start=2):
        if n - 1 > MAX_ROWS:
            raise ConfigError(f"the sample has more than {MAX_ROWS} rows; take a subsample")
        yield n, line


def _number(text: str, data: Path, line: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{data} line {line}: {text!r} is not a number") from None


def _run(session: OnnxModel, inputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    names = session.signature.output_names
    chunks: list[list[np.ndarray]] = []
    for start in range(0, rows, _CHUNK):
        part = {name: array[start : start + _CHUNK] for name, array in inputs.items()}
        chunks.append(session.run(0, part, names))
    return {
        name: np.concatenate([chunk[i] for chunk in chunks])
        for i, name in enumerate(names)
        if chunks[0][i].dtype.kind in "biuf"
    }
