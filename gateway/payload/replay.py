"""Replaying a payload log: reading its records back, and how far a run of the logged
inputs is from the logged outputs.

``read_log`` takes a file, a directory of ``payload-*.jsonl`` files or a
``redis://HOST:PORT/STREAM`` URL and yields each record, or, for a line that is not
one, where it is and what is wrong with it (the replay reports it and goes on).
``compare`` measures one record's run: whether every output is bit-for-bit the
logged one, whether the argmax of some row differs, and the largest absolute
difference. ``Tally`` adds those up per (model, logged version, version run).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateway.payload.record import LoggedRequest, from_json
from gateway.payload.sinks import stream_address

MAX_RECORDS = 10_000_000  # a replay reads at most this many
MAX_LINE_BYTES = 64 * 1024 * 1024  # a longer line is skipped, not read into memory
_STREAM_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Unreadable:
    where: str  # "FILE line N" or "STREAM entry ID"
    why: str


def read_log(source: str) -> Iterator[LoggedRequest | Unreadable]:
    if source.startswith(("redis://", "rediss://")):
        yield from _read_stream(source)
        return
    path = Path(source.removeprefix("file://"))
    files = sorted(path.glob("payload-*.jsonl"), key=_file_order) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        raise FileNotFoundError(f"no payload log at {source} (a .jsonl file or a directory)")
    count = 0
    for file in files:
        with file.open("rb") as lines:
            number = 0
            while line := lines.readline(MAX_LINE_BYTES + 1):
                number += 1
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    while (rest := lines.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                        pass  # the rest of a line too long to be a record, never held whole
                    too_long = f"longer than {MAX_LINE_BYTES:,} bytes"
                    yield Unreadable(f"{file} line {number}", too_long)
                    continue
                if not line.strip():
                    continue
                count += 1
                if count > MAX_RECORDS:
                    return
                try:
                    yield from_json(line)
                except ValueError as exc:
                    yield Unreadable(f"{file} line {number}", str(exc))


def _file_order(path: Path) -> tuple[str, int]:
    """payload-PID-N.jsonl: by worker, then N as a number (10 after 9)."""
    stem, _, number = path.stem.rpartition("-")
    return stem, int(number) if number.isdigit() else 0


def _read_stream(url: str) -> Iterator[LoggedRequest | Unreadable]:
    import redis

    server, stream = stream_address(url)
    client = redis.Redis.from_url(server)
    try:
        start, count = "-", 0
        while count < MAX_RECORDS:
            entries: Any = client.xrange(stream, min=start, max="+", count=_STREAM_CHUNK)
            for entry_id, fields in entries:
                count += 1
                line = fields.get(b"record", b"")
                try:
                    yield from_json(line)
                except ValueError as exc:
                    yield Unreadable(f"{stream} entry {entry_id.decode()}", str(exc))
            if len(entries) < _STREAM_CHUNK:
                return
            start = "(" + entries[-1][0].decode()
    finally:
        client.close()


@dataclass(frozen=True, slots=True)
class Difference:
    exact: bool  # every output bit for bit as logged
    disagrees: bool  # the argmax of some row of some output differs
    max_abs_diff: float  # over every numeric output (0 when exact)


def compare(logged: Mapping[str, np.ndarray], ran: Mapping[str, np.ndarray]) -> Difference:
    exact = True
    disagrees = False
    largest = 0.0
    for name, expected in logged.items():
        actual = ran.get(name)
        if actual is None or actual.shape != expected.shape:
            return Difference(False, True, float("inf"))
        if expected.dtype.kind in "OSU":
            same = list(expected.reshape(-1)) == list(actual.reshape(-1))
            exact &= same
            disagrees |= not same
            continue
        if actual.dtype != expected.dtype or actual.tobytes() != expected.tobytes():
            exact = False
        wide_expected = expected.astype(np.float64)
        wide_actual = actual.astype(np.float64)
        both_nan = np.isnan(wide_expected) & np.isnan(wide_actual)
        gaps = np.where(both_nan, 0.0, np.abs(wide_expected - wide_actual))
        if gaps.size:
            largest = max(largest, float(np.nan_to_num(gaps, nan=np.inf).max()))
        if expected.ndim >= 2 and expected.dtype.kind == "f" and expected.shape[-1] > 1:
            disagrees |= bool(np.any(expected.argmax(axis=-1) != actual.argmax(axis=-1)))
    return Difference(exact, disagrees, largest)


@dataclass(slots=True)
class Tally:
    records: int = 0
    exact: int = 0
    disagreements: int = 0
    within: int = 0  # within the tolerance
    max_abs_diff: float = 0.0
    failed: int = 0  # the run itself failed (inputs the version does not take, say)

    def add(self, difference: Difference, tolerance: float) -> None:
        self.records += 1
        self.exact += difference.exact
        self.disagreements += difference.disagrees
        self.within += difference.exact or (
            tolerance > 0 and difference.max_abs_diff <= tolerance and not difference.disagrees
        )
        self.max_abs_diff = max(self.max_abs_diff, difference.max_abs_diff)
