"""One payload record: what a request ran, which version answered and why, and what
it answered (SPEC 14).

The request path fills a ``PayloadEntry`` with references to arrays it already has
(nothing is copied or encoded there, and the time is a ``perf_counter`` reading); the
writer thread turns it into one JSON line, most records a batch at a time
(``columns.encode_batch``), the rest with ``to_json``. A record, schema 1::

    {"schema": 1, "time": "2026-12-03T08:00:00.123456+00:00", "request_id": "...",
     "model": "digits", "version": "2", "routing": "weights", "protocol": "v2",
     "inputs": {"pixels": TENSOR}, "outputs": {"probabilities": TENSOR},
     "features": {"entity_input": "user_id", "ids": TENSOR, "rows_from_store": 1,
                  "rows_defaulted": 0},
     "shadow": {"version": "3", "outputs": {...}} or {"version": "3", "error": "..."},
     "queue_s": 0.0004, "inference_s": 0.0011}

``inputs`` are the model's inputs as run, after feature lookup; ``features`` (only for
a request that sent entity ids) says which ids and how many rows came from the store
(or its local cache) and how many got the ``[features]`` defaults. TENSOR is
``gateway.payload.tensors``'s form: exact bytes. ``routing``: ``explicit``,
``default``, ``weights``, ``sticky`` or ``rollout``. ``time`` (when the answer was
sent, in UTC), ``queue_s`` and ``inference_s`` are to the microsecond.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from time import perf_counter
from typing import Any

import numpy as np
import orjson

from gateway.payload.tensors import decode, encode

SCHEMA = 1


@dataclass(slots=True)
class PayloadEntry:
    at: float  # perf_counter() when the answer was sent; the writer makes it a time
    request_id: str
    model: str
    version: str
    routing: str
    protocol: str
    inputs: Mapping[str, np.ndarray]
    outputs: Sequence[tuple[str, np.ndarray]]
    entity_input: str | None = None
    entity_ids: np.ndarray | None = None
    rows_from_store: int = 0
    rows_defaulted: int = 0
    queue_s: float | None = None
    inference_s: float | None = None
    shadow_version: str | None = None
    shadow_outputs: Sequence[np.ndarray] | None = None
    shadow_error: str | None = None


class WallClock:
    """``perf_counter()`` readings as wall-clock times, anchored when made. The request
    path reads only ``perf_counter`` (an aware ``datetime.now`` costs it microseconds);
    the writer makes a new clock for every batch, so the two cannot drift apart."""

    __slots__ = ("perf", "wall")

    def __init__(self) -> None:
        self.wall = datetime.now(UTC).timestamp()
        self.perf = perf_counter()

    def micros(self, reading: float) -> int:
        """Microseconds since the epoch (``columns`` does the same arithmetic on arrays,
        so both ways of writing a record give the same time)."""
        return round((self.wall + (reading - self.perf)) * 1e6)


@lru_cache(maxsize=64)
def second_prefix(second: int) -> bytes:
    """``"2026-12-03T08:00:00.``: a record's time up to its microseconds; a batch spans a
    second or two, so this is formatted once a second, not once a record."""
    return datetime.fromtimestamp(second, UTC).strftime('"%Y-%m-%dT%H:%M:%S.').encode()


def stamp(micros: int) -> orjson.Fragment:
    """A record's ``time``: RFC 3339 in UTC, always with microseconds."""
    second, fraction = divmod(micros, 1_000_000)
    return orjson.Fragment(second_prefix(second) + b'%06d+00:00"' % fraction)


def to_micros(seconds: float | None) -> float | None:
    """A duration rounded to the microsecond, as ``columns`` writes it."""
    return None if seconds is None else round(seconds * 1e6) / 1e6


def to_json(entry: PayloadEntry, clock: WallClock | None = None) -> bytes:
    """The record's line; ``clock``: a ``WallClock`` shared by the writer's batch.
    ``columns.encode_batch`` writes most records faster, to the same effect."""
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "time": stamp((clock or WallClock()).micros(entry.at)),
        "request_id": entry.request_id,
        "model": entry.model,
        "version": entry.version,
        "routing": entry.routing,
        "protocol": entry.protocol,
        "inputs": {name: encode(array) for name, array in entry.inputs.items()},
        "outputs": {name: encode(array) for name, array in entry.outputs},
        "queue_s": to_micros(entry.queue_s),
        "inference_s": to_micros(entry.inference_s),
    }
    if entry.entity_input is not None:
        record["features"] = {
            "entity_input": entry.entity_input,
            "ids": None if entry.entity_ids is None else encode(entry.entity_ids),
            "rows_from_store": entry.rows_from_store,
            "rows_defaulted": entry.rows_defaulted,
        }
    if entry.shadow_version is not None:
        shadow: dict[str, Any] = {"version": entry.shadow_version}
        if entry.shadow_outputs is not None:
            names = [name for name, _ in entry.outputs]
            shadow["outputs"] = {
                name: encode(array)
                for name, array in zip(names, entry.shadow_outputs, strict=False)
            }
        else:
            shadow["error"] = entry.shadow_error or "the shadow run did not finish"
        record["shadow"] = shadow
    return orjson.dumps(record)


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """A record read back, for replay: the inputs as run and the outputs answered."""

    model: str
    version: int
    request_id: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    shadow_version: int | None = None
    shadow_outputs: dict[str, np.ndarray] = field(default_factory=dict)


def from_json(line: bytes) -> LoggedRequest:
    """A record back from its line; ValueError saying what is wrong with one that is
    not a record of this schema."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if record.get("schema") != SCHEMA:
        raise ValueError(f"schema {record.get('schema')!r}; this gateway reads schema {SCHEMA}")
    try:
        shadow = record.get("shadow") or {}
        return LoggedRequest(
            model=str(record["model"]),
            version=int(record["version"]),
            request_id=str(record["request_id"]),
            inputs={str(k): decode(v) for k, v in record["inputs"].items()},
            outputs={str(k): decode(v) for k, v in record["outputs"].items()},
            shadow_version=int(shadow["version"]) if "outputs" in shadow else None,
            shadow_outputs={str(k): decode(v) for k, v in shadow.get("outputs", {}).items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a payload record ({type(exc).__name__}: {exc})") from None
