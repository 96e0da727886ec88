"""Feature stores: where the per-entity HASHes live.

``RedisStore`` (redis_store.py) talks to one Redis server or a Redis Cluster;
``MemoryStore`` serves the same layout from memory, filled from a CSV or JSONL
file, so a gateway runs without Redis. Both answer ``fetch_rows``: each key's
feature row, for all the keys at once (one round trip to Redis). Which store a
model reads is the service's choice (``gateway.service.feature_wiring``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from gateway.errors import FeatureDataInvalid
from gateway.features.rows import FeatureRow, read_rows, rows_from_replies
from gateway.features.section import KeyTemplate

log = logging.getLogger("gateway.features")

Values = list[bytes | str | None]


class StoreUnavailable(Exception):
    """The store could not answer (down, slow, or skipped while its breaker is open).

    ``kind`` says which, for the failure log: "timeout", "connection", "skipped"
    (the breaker is open), "shutdown" or "error" (anything else the store answered)."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


class FeatureStore(Protocol):
    name: str

    async def fetch_rows(
        self, keys: Sequence[str], fields: Sequence[str], defaults: np.ndarray, timeout_s: float
    ) -> list[FeatureRow | FeatureDataInvalid]:
        """Each key's row (``defaults`` for absent fields), or why that one entity is
        malformed in the store (not a HASH, values that are not numbers); raises
        StoreUnavailable only for store-level failures (connection, timeout)."""
        ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


class MemoryStore:
    """HASHes in a dict. Rows from a file are indexed lazily by each key template, since
    the file names entities by a column and each model has its own key layout."""

    name = "memory"

    def __init__(self, rows: Iterable[Mapping[str, str]] = ()) -> None:
        self._rows = list(rows)
        self._hashes: dict[str, dict[str, str]] = {}
        self._indexed: set[tuple[str, str]] = set()

    @classmethod
    def from_file(cls, path: Path) -> MemoryStore:
        rows: list[dict[str, str]] = []
        skipped = 0
        for row in read_rows(path):
            if row.error is not None:
                skipped += 1
                log.warning("%s line %d skipped: %s", path, row.line, row.error)
            else:
                rows.append(row.values)
        log.info("features file %s: %d rows (%d skipped)", path, len(rows), skipped)
        return cls(rows)

    def index(self, template: str, entity: str) -> None:
        """Make the file's rows reachable under ``template`` (its ``{entity}`` column)."""
        if (template, entity) in self._indexed:
            return
        self._indexed.add((template, entity))
        key_of = KeyTemplate(template, entity).key
        for row in self._rows:
            entity_id = row.get(entity)
            if entity_id:
                fields = {k: v for k, v in row.items() if k != entity}
                self._hashes.setdefault(key_of(entity_id), {}).update(fields)

    def put(self, key: str, fields: Mapping[str, str]) -> None:
        self._hashes.setdefault(key, {}).update(fields)

    async def fetch(
        self, keys: Sequence[str], fields: Sequence[str], timeout_s: float
    ) -> list[Values]:
        empty: dict[str, str] = {}
        hashes = self._hashes
        return [[hashes.get(key, empty).get(f) for f in fields] for key in keys]

    async def fetch_rows(
        self, keys: Sequence[str], fields: Sequence[str], defaults: np.ndarray, timeout_s: float
    ) -> list[FeatureRow | FeatureDataInvalid]:
        replies = await self.fetch(keys, fields, timeout_s)
        return rows_from_replies(keys, fields, replies, defaults)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
