"""FeatureLookup: one model's features by entity id, batched, cached and fault tolerant.

A request first reads the local cache; for the rest it joins the next fetch.
Fetches are batched the way inference is: while one fetch is out, the keys
asked for meanwhile gather (deduplicated) and go together in the next one, so
the store sees one pipelined round trip per batch of concurrent requests, never
one per row. A key already being fetched is not asked for twice: its callers
share the answer.

When the store fails (or its breaker is open), rows are answered from the local
cache, even expired entries, and otherwise from the defaults; or, with
``on_redis_error = "error"``, the request gets 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

import numpy as np

from gateway.errors import FeatureDataInvalid, FeatureStoreUnavailable, InvalidRequest
from gateway.features.cache import LocalCache
from gateway.features.keys import KeyTemplate
from gateway.features.store import FeatureStore, StoreUnavailable
from gateway.features.vectors import (
    FeatureRow,
    defaults_vector,
    entity_ids,
    feature_matrix,
    row_from_store,
    take_overrides,
)
from gateway.repository.spec import FeaturesSection

log = logging.getLogger("gateway.features")

_SHOWN_MISSING = 10


class FeatureObserver(Protocol):
    def looked_up(self, source: str, rows: int) -> None: ...
    def fetched(self, keys: int) -> None: ...


class FeatureLookup:
    def __init__(
        self,
        model: str,
        config: FeaturesSection,
        store: FeatureStore,
        now: Callable[[], float],
        observer: FeatureObserver | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.entity_input = config.entity_input
        self._store = store
        self._template = KeyTemplate.parse(config.key, config.entity_input)
        self._fields = tuple(config.fields)
        self._defaults = defaults_vector(config.fields, config.defaults)
        self._missing = FeatureRow(self._defaults, found=False)
        self._timeout_s = config.redis_timeout_ms / 1000
        self._cache: LocalCache[FeatureRow] = LocalCache(
            config.local_max_entries, config.local_ttl_ms / 1000, now
        )
        self._observer = observer
        self._pending: dict[str, asyncio.Future[FeatureRow]] = {}  # for the next fetch
        self._in_flight: dict[str, asyncio.Future[FeatureRow]] = {}  # in the current one
        self._fetcher: asyncio.Task[None] | None = None

    async def fill(self, inputs: dict[str, np.ndarray], datatypes: dict[str, str]) -> None:
        """Replace the entity ids (and any field inputs) in ``inputs`` with the model's
        feature input."""
        config = self.config
        if config.input in inputs:
            raise InvalidRequest(
                f"send either '{config.entity_input}' (entity ids, features looked up) or "
                f"'{config.input}' (the features themselves), not both"
            )
        ids = entity_ids(
            config.entity_input,
            inputs.pop(config.entity_input),
            datatypes.pop(config.entity_input),
        )
        overrides = take_overrides(self._fields, config.entity_input, len(ids), inputs, datatypes)
        if len(overrides) == len(self._fields):
            rows = [self._missing] * len(ids)  # the caller sent every field: nothing to look up
        else:
            rows = await self.rows(ids)
        inputs[config.input] = feature_matrix(rows, overrides)
        datatypes[config.input] = "FP32"

    async def rows(self, ids: list[str]) -> list[FeatureRow]:
        """Each id's features: from the local cache, else the store, else the defaults."""
        cache = self._cache
        rows: list[FeatureRow | None] = []
        misses: dict[str, list[int]] = {}
        key_of = self._template.key
        for index, entity in enumerate(ids):
            key = key_of(entity)
            row = cache.get(key)
            rows.append(row)
            if row is None:
                misses.setdefault(key, []).append(index)
        local = len(ids) - sum(len(where) for where in misses.values())
        sources = {"local": local, "redis": 0, "default": 0}
        if misses:
            await self._fill_misses(misses, rows, sources)
        if self._observer is not None:
            for source, count in sources.items():
                if count:
                    self._observer.looked_up(source, count)
        complete: list[FeatureRow] = rows  # type: ignore[assignment]  # every slot is set
        if self.config.missing == "error":
            self._check_found(ids, complete)
        return complete

    async def _fill_misses(
        self,
        misses: dict[str, list[int]],
        rows: list[FeatureRow | None],
        sources: dict[str, int],
    ) -> None:
        futures = {key: self._future(key) for key in misses}
        # asyncio.wait, not gather: a caller that gives up must not cancel a fetch that
        # other callers share
        await asyncio.wait(futures.values())
        for key, future in futures.items():
            error = future.exception()
            if error is None:
                row = future.result()
                source = "redis" if row.found else "default"
            elif isinstance(error, StoreUnavailable):
                row, source = self._fallback(key, error)
            else:
                raise error
            for index in misses[key]:
                rows[index] = row
            sources[source] += len(misses[key])

    def _fallback(self, key: str, error: StoreUnavailable) -> tuple[FeatureRow, str]:
        if self.config.on_redis_error == "error":
            raise FeatureStoreUnavailable(
                f"model '{self.model}' looks its features up in the feature store, which is "
                f'unavailable ({error}); [features] on_redis_error = "error"'
            )
        stale = self._cache.get_stale(key)
        if stale is not None:
            return stale, "local"
        return self._missing, "default"

    def _check_found(self, ids: list[str], rows: list[FeatureRow]) -> None:
        missing = [entity for entity, row in zip(ids, rows, strict=True) if not row.found]
        if missing:
            unique = list(dict.fromkeys(missing))
            shown = ", ".join(repr(e) for e in unique[:_SHOWN_MISSING])
            extra = len(unique) - _SHOWN_MISSING
            more = f" and {extra} more" if extra > 0 else ""
            raise InvalidRequest(
                f"no features for {self.entity_input} {shown}{more} in the feature store "
                f"(key {self.config.key!r}); model '{self.model}' has [features] "
                'missing = "error"'
            )

    # -- batching the fetches ------------------------------------------------------

    def _future(self, key: str) -> asyncio.Future[FeatureRow]:
        future = self._in_flight.get(key) or self._pending.get(key)
        if future is not None:
            return future  # someone already asked for it: share that fetch
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        if self._fetcher is None:
            # it starts on the next turn of the loop: keys asked for until then join in
            self._fetcher = asyncio.get_running_loop().create_task(self._fetch_pending())
        return future

    async def _fetch_pending(self) -> None:
        try:
            while self._pending:
                batch = self._in_flight = self._pending
                self._pending = {}
                await self._fetch(batch)
                self._in_flight = {}
        finally:
            # cancelled (shutdown): nobody may be left waiting on a fetch that will not come
            stopped = StoreUnavailable("the gateway is shutting down")
            for future in (*self._in_flight.values(), *self._pending.values()):
                _fail(future, stopped)
            self._fetcher = None
            self._in_flight = {}
            self._pending = {}

    async def _fetch(self, batch: dict[str, asyncio.Future[FeatureRow]]) -> None:
        keys = list(batch)
        if self._observer is not None:
            self._observer.fetched(len(keys))
        try:
            replies = await self._store.fetch(keys, self._fields, self._timeout_s)
        except StoreUnavailable as error:
            for future in batch.values():
                _fail(future, error)
            return
        except Exception as error:  # a bug or an unexpected client error: fail, do not hang
            log.exception("feature fetch for model %s failed", self.model)
            for future in batch.values():
                _fail(future, StoreUnavailable(f"unexpected error: {error!r}"))
            return
        for key, values in zip(keys, replies, strict=True):
            future = batch[key]
            try:
                row = row_from_store(key, self._fields, values, self._defaults)
            except FeatureDataInvalid as error:
                _fail(future, error)
                continue
            self._cache.put(key, row)
            if not future.done():
                future.set_result(row)

    async def aclose(self) -> None:
        fetcher = self._fetcher
        if fetcher is not None:
            fetcher.cancel()
            await asyncio.gather(fetcher, return_exceptions=True)


def _fail(future: asyncio.Future[FeatureRow], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
        future.exception()  # marked as retrieved: its callers may all have gone
