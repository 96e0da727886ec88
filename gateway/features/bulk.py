"""``gateway features load``: a CSV or JSONL file of entities into Redis HASHes.

Each good row becomes ``HSET <key> field value ...`` (merged into an existing
HASH), plus ``EXPIRE`` with ``--ttl``; the commands go out in pipelines of
``chunk_size`` rows. A bad row (no id, a value that is not a number, broken
JSON) is reported with its line number and skipped; with ``strict`` the file is
checked first and nothing is written if any row is bad.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from redis.exceptions import RedisError

from gateway.features.rows import Row, check_numbers, read_rows
from gateway.features.section import KeyTemplate, placeholders
from gateway.redis_client import connect, redacted

_SHOWN_BAD_ROWS = 20


class LoadError(Exception):
    """The load could not run or finish; the message says why."""


@dataclass(slots=True)
class LoadReport:
    loaded: int = 0
    fields: set[str] = field(default_factory=set)
    bad: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0
    written: bool = True  # False: --strict found bad rows, nothing was written

    def summary(self, path: Path, url: str, template: str, ttl_s: int | None) -> str:
        lines = [f"line {line}: {why}" for line, why in self.bad[:_SHOWN_BAD_ROWS]]
        if len(self.bad) > _SHOWN_BAD_ROWS:
            lines.append(f"... and {len(self.bad) - _SHOWN_BAD_ROWS} more bad rows")
        if not self.written:
            lines.append(f"{path}: {len(self.bad)} bad row(s); nothing written (--strict)")
            return "\n".join(lines)
        rate = self.loaded / self.seconds if self.seconds > 0 else 0.0
        lines.append(
            f"loaded {self.loaded} entities from {path} into {redacted(url)} as {template!r} "
            f"({len(self.fields)} fields, TTL {f'{ttl_s} s' if ttl_s else 'none'}) "
            f"in {self.seconds:.2f} s ({rate:,.0f} rows/s); skipped {len(self.bad)} bad row(s)"
        )
        return "\n".join(lines)


def id_column(template: str) -> str:
    """The one placeholder of a key template, which names the file's id column."""
    try:
        names = placeholders(template)
    except ValueError as exc:
        raise LoadError(f"--key {template!r} is not a valid template: {exc}") from None
    if len(names) != 1 or not names[0]:
        raise LoadError(
            f"--key {template!r} must contain exactly one placeholder naming the id column, "
            f"such as 'user:{{user_id}}'; found {names or 'none'}"
        )
    return names[0]


def count_lines(path: Path) -> int:
    lines = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            lines += chunk.count(b"\n")
    return lines


class Progress:
    """A bar on a terminal, a line per 10% otherwise; silent for small files."""

    def __init__(self, total: int, stream: TextIO, min_total: int) -> None:
        self._total = total
        self._stream = stream
        self._active = total >= min_total
        self._tty = stream.isatty()
        self._started = time.perf_counter()
        self._last_tenth = -1

    def update(self, done: int) -> None:
        if not self._active:
            return
        fraction = min(done / self._total, 1.0)
        rate = done / max(time.perf_counter() - self._started, 1e-9)
        text = f"{fraction:6.1%}  {done:,}/{self._total:,} rows  {rate:,.0f} rows/s"
        if self._tty:
            bar = "#" * int(fraction * 30)
            self._stream.write(f"\r[{bar:<30}] {text}")
        elif (tenth := int(fraction * 10)) > self._last_tenth:
            self._last_tenth = tenth
            self._stream.write(text + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._active and self._tty:
            self._stream.write("\n")


async def load_file(
    path: Path,
    url: str,
    template: str,
    ttl_s: int | None = None,
    strict: bool = False,
    chunk_size: int = 1000,
    progress: Callable[[int], Progress] | None = None,
) -> LoadReport:
    column = id_column(template)
    key_of = KeyTemplate(template, column).key
    report = LoadReport()
    if strict:
        report.bad = [(r.line, r.error) for r in _checked(path, column) if r.error is not None]
        if report.bad:
            report.written = False
            return report
    lines = count_lines(path) if progress is not None else 0
    bar = progress(lines) if progress is not None else None
    client = connect(url)
    started = time.perf_counter()
    try:
        pipe = client.pipeline(transaction=False)
        queued = 0
        for row in _checked(path, column):
            if row.error is not None:
                report.bad.append((row.line, row.error))
                continue
            values = dict(row.values)
            key = key_of(values.pop(column))
            pipe.hset(key, mapping=values)
            if ttl_s:
                pipe.expire(key, ttl_s)
            report.fields.update(values)
            queued += 1
            if queued == chunk_size:
                await _flush(pipe, url)
                report.loaded += queued
                queued = 0
                if bar is not None:
                    bar.update(row.line)
        if queued:
            await _flush(pipe, url)
            report.loaded += queued
        if bar is not None:
            bar.update(lines)
    finally:
        if bar is not None:
            bar.close()
        await client.aclose()
    report.seconds = time.perf_counter() - started
    return report


def _checked(path: Path, column: str) -> Iterator[Row]:
    try:
        for row in read_rows(path):
            yield check_numbers(row, column)
    except UnicodeDecodeError as exc:
        raise LoadError(f"{path} is not UTF-8 text: {exc}") from None


async def _flush(pipe: Any, url: str) -> None:
    try:
        await pipe.execute()
    except (RedisError, OSError) as exc:
        raise LoadError(f"writing to {redacted(url)} failed: {exc}") from None


def default_progress(total: int) -> Progress:
    return Progress(total, sys.stderr, min_total=10_000)
