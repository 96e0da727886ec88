"""Joining requests into one batch along dimension 0, and splitting the outputs back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from gateway.errors import InferenceFailed


def batch_key(
    inputs: Mapping[str, np.ndarray], outputs: tuple[str, ...], batching: bool
) -> tuple[int, object]:
    """A request's row count, and the key of the requests it may share a run with: the
    same outputs, and inputs with the same dtypes and non-batch dimensions."""
    if not batching:
        return 1, None
    # inputs in the order they came: callers that order them differently just do not share
    key: list[object] = [outputs]
    rows = -1
    for name, array in inputs.items():
        key += (name, array.dtype, array.shape[1:])
        if rows < 0:
            rows = array.shape[0] if array.ndim else 1
    return rows, tuple(key)


def stack(requests: Sequence[Mapping[str, np.ndarray]]) -> Mapping[str, np.ndarray]:
    """One input mapping for the batch; a batch of one passes through without a copy."""
    if len(requests) == 1:
        return requests[0]
    return {name: np.concatenate([r[name] for r in requests], axis=0) for name in requests[0]}


def check_outputs(outputs: list[np.ndarray], names: Sequence[str], rows: int, split: bool) -> None:
    """A run must return every requested output, each with a row per batch row."""
    if len(outputs) != len(names):
        raise InferenceFailed(f"the model returned {len(outputs)} outputs, {len(names)} expected")
    if split:
        for name, output in zip(names, outputs, strict=True):
            if output.ndim == 0 or output.shape[0] != rows:
                raise InferenceFailed(
                    f"output '{name}' has shape {list(output.shape)}, which cannot be split "
                    f"into the batch's {rows} rows; set [batching] max_batch_size = 0"
                )


def split_rows(outputs: list[np.ndarray], row_counts: Sequence[int]) -> list[list[np.ndarray]]:
    """Each request's rows of every output, as views (no copies)."""
    parts: list[list[np.ndarray]] = []
    offset = 0
    for rows in row_counts:
        end = offset + rows
        parts.append([output[offset:end] for output in outputs])
        offset = end
    return parts
