"""FeatureLookup: one model's features by entity id, batched, cached and fault tolerant.

A request first reads the local cache; the keys it misses join the next batched
fetch (``FetchBatcher``). When the store fails (or its breaker is open), rows are
answered from the local cache, even expired entries, and otherwise from the
defaults; or, with ``on_redis_error = "error"``, the request gets 503.

Entities the store does not have are cached too (negative caching: a caller that
repeats unknown ids does not send each to the store), within the same bounds in
entries and bytes and the same TTL. An entity that is malformed in the store (not
a HASH, a value that is not a number) is missing for that entity alone: its row
takes the defaults (or, with ``missing = "error"``, the request gets 400 naming
it), it is not cached, and it is logged (see ``fetches.FailureLog``).

Every row is counted by source (``gateway_feature_lookups_total``): ``local`` and
``redis`` for rows the store has (from the local cache, or fetched now), ``default`` for
rows answered with the defaults, whether the store's "no such entity" was fetched now or
cached. A request's own counts go to its ``FeatureTally`` (its log line and the
``x-feature-defaults`` header). Entities answered with the defaults because the store
does not have them are logged too, at most one line per model every 10 s with the
counts (see ``fetches.FailureLog``): a model that silently scores unknown users with
its defaults is visible.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from typing import Protocol

import numpy as np

from gateway.errors import FeatureDataInvalid, FeatureStoreUnavailable, InvalidRequest
from gateway.features.cache import LocalCache
from gateway.features.fetches import FetchBatcher, Waiter
from gateway.features.rows import (
    FeatureRow,
    defaults_vector,
    entity_ids,
    feature_matrix,
    take_overrides,
)
from gateway.features.section import FeaturesSection, KeyTemplate
from gateway.features.stores import FeatureStore, StoreUnavailable

_SHOWN_MISSING = 10
TTL_JITTER = 0.2  # cached rows live 80-100% of local_ttl_ms (see LocalCache)
_SOURCES = ("local", "redis", "default")  # gateway_feature_lookups_total's source label


class RowCounter(Protocol):
    count: int  # rows; a plain attribute, so counting costs an addition


class _Uncounted:
    count = 0


class FeatureTally(Protocol):
    """One request's rows by where their features came from: the store (or the local
    cache of it) or the defaults. Plain attributes, so counting costs an addition."""

    features_store: int
    features_default: int


class CacheSize(Sized, Protocol):
    bytes: int  # charged for the entries held now (len(): how many)


class FeatureObserver(Protocol):
    def counter(self, source: str) -> RowCounter: ...
    def fetched(self, keys: int) -> None: ...
    def track_cache(self, cache: CacheSize) -> None: ...


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
        self._template = KeyTemplate.parse(config.key, config.entity_input)
        self._fields = tuple(config.fields)
        self._defaults = defaults_vector(config.fields, config.defaults)
        self._missing = FeatureRow(self._defaults, found=False)
        self._missing_is_error = config.missing == "error"
        self._cache: LocalCache[FeatureRow] = LocalCache(
            config.local_max_entries,
            config.local_ttl_ms / 1000,
            now,
            jitter=TTL_JITTER,
            max_bytes=config.local_max_bytes,
        )
        # rows by source: the metrics read these counters
        self._counters: tuple[RowCounter, ...] = tuple(
            observer.counter(source) if observer is not None else _Uncounted()
            for source in _SOURCES
        )
        self._fetches = FetchBatcher(
            model,
            store,
            self._fields,
            self._defaults,
            config.redis_timeout_ms / 1000,
            self._cache,
            observer.fetched if observer is not None else None,
            now,
        )
        if observer is not None:
            observer.track_cache(self._cache)

    def metadata(self) -> dict[str, object]:
        """What a client needs to send entity ids instead of the features (the model
        metadata's ``parameters.features``); the keys are those of [features]."""
        config = self.config
        return {
            "entity_input": {"name": config.entity_input, "datatype": "BYTES", "shape": [-1]},
            "input": config.input,
            "key": config.key,
            "fields": list(self._fields),
            "defaults": {field: config.defaults.get(field, 0.0) for field in self._fields},
            "missing": config.missing,
            "max_ids": config.max_ids,
        }

    async def fill(
        self,
        inputs: dict[str, np.ndarray],
        datatypes: dict[str, str],
    ) -> None:
        """Replace the entity ids (and any field inputs) in ``inputs`` with the model's
        feature input."""
        pending = self.start_fill(inputs, datatypes)
        if pending is not None:
            await pending.future
            pending.finish()

    def start_fill(
        self,
        inputs: dict[str, np.ndarray],
        datatypes: dict[str, str],
        tally: FeatureTally | None = None,
    ) -> PendingRows | None:
        """``fill`` without the waiting: done at once (None) where no row needs the store.
        Else the feature input is in ``inputs`` already, with the rows that wait for the
        store still to be written: they are, by ``finish()`` on the returned object once
        its ``future`` is done. The batcher does that (see ``batching.request.PendingInputs``):
        the request waits for its features in its batch, not on its own. ``tally``: the
        request's rows by source, once they are known."""
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
            config.max_ids,
        )
        overrides = (
            take_overrides(self._fields, config.entity_input, len(ids), inputs, datatypes)
            if inputs  # anything besides the ids: perhaps fields
            else []
        )
        if len(ids) == 1 and not overrides:
            # the hot path: one id, in the local cache
            key = self._template.key(ids[0])
            row = self._cache.get(key)
            if row is not None and row.found:
                self._counters[0].count += 1
                if tally is not None:
                    tally.features_store += 1
                inputs[config.input] = row.vector[np.newaxis]
                datatypes[config.input] = "FP32"
                return None
            if row is not None and not self._missing_is_error:  # known to be unknown
                self._defaulted(1, 1, key, tally)
                inputs[config.input] = row.vector[np.newaxis]
                datatypes[config.input] = "FP32"
                return None
        if len(overrides) == len(self._fields):
            # the caller sent every field: nothing to look up
            complete = [self._missing] * len(ids)
        else:
            rows, misses = self._from_cache(ids)
            if misses:
                waiter = self._fetches.ask(misses, len(misses))
                matrix = inputs[config.input] = np.empty((len(ids), len(self._fields)), np.float32)
                datatypes[config.input] = "FP32"
                return PendingRows(self, ids, rows, misses, waiter, overrides, matrix, tally)
            complete = self._all_local(ids, rows, tally)
        inputs[config.input] = feature_matrix(complete, overrides)
        datatypes[config.input] = "FP32"
        return None

    async def rows(self, ids: list[str]) -> list[FeatureRow]:
        """Each id's features: from the local cache, else the store, else the defaults."""
        rows, misses = self._from_cache(ids)
        if not misses:
            return self._all_local(ids, rows)
        waiter = self._fetches.ask(misses, len(misses))
        pending = PendingRows(self, ids, rows, misses, waiter, [], None, None)
        await pending.future
        return pending.complete()

    def _all_local(
        self, ids: list[str], rows: list[FeatureRow | None], tally: FeatureTally | None = None
    ) -> list[FeatureRow]:
        """Rows that needed no fetch: all from the local cache."""
        complete: list[FeatureRow] = rows  # type: ignore[assignment]  # every slot is set
        self._count(ids, complete, 0, 0, tally)
        if self._missing_is_error:
            self._check_found(ids, complete)
        return complete

    def _count(
        self,
        ids: list[str],
        rows: list[FeatureRow],
        fetched: int,
        excused: int,
        tally: FeatureTally | None,
    ) -> None:
        """Count a request's rows by source: ``fetched`` of the found ones came from the
        store just now (the others from the local cache); ``excused`` of the rows with
        defaults have them because the store failed or held them malformed (logged as
        such), the others because the store does not have them."""
        default = 0
        for row in rows:
            if not row.found:
                default += 1
        stored = len(rows) - default
        counters = self._counters
        counters[0].count += stored - fetched
        counters[1].count += fetched
        if tally is not None:
            tally.features_store += stored
        if default:
            key = ""  # one of the unknown entities' keys, for the log line
            if default > excused and not self._missing_is_error:
                key = self._template.key(
                    next(e for e, r in zip(ids, rows, strict=True) if not r.found)
                )
            self._defaulted(default, default - excused, key, tally)

    def _defaulted(self, rows: int, unknown: int, key: str, tally: FeatureTally | None) -> None:
        """``rows`` rows get the defaults, ``unknown`` of them as the store lacks their
        entity (for the rate-limited log line; not if refused: missing = "error")."""
        self._counters[2].count += rows
        if tally is not None:
            tally.features_default += rows
        if unknown and not self._missing_is_error:
            self._fetches.unknown(unknown, key)

    def _from_cache(self, ids: list[str]) -> tuple[list[FeatureRow | None], dict[str, list[int]]]:
        """The cached rows (None where missing) and the missing keys with their rows."""
        cache = self._cache
        key_of = self._template.key
        if len(ids) == 1:  # the common case, without the bookkeeping of the loop below
            key = key_of(ids[0])
            row = cache.get(key)
            return [row], ({} if row is not None else {key: [0]})
        found: list[FeatureRow | None] = []
        misses: dict[str, list[int]] = {}
        for index, entity in enumerate(ids):
            key = key_of(entity)
            row = cache.get(key)
            found.append(row)
            if row is None:
                misses.setdefault(key, []).append(index)
        return found, misses

    def completed(
        self,
        ids: list[str],
        rows: list[FeatureRow | None],
        misses: dict[str, list[int]],
        waiter: Waiter,
        tally: FeatureTally | None = None,
    ) -> list[FeatureRow]:
        """``rows`` with the missing ones filled in from the waiter's outcomes (or the
        fallbacks), and counted by source."""
        fetched = excused = 0  # rows found by this fetch; rows defaulted by a failure
        outcomes = waiter.outcomes
        malformed: FeatureDataInvalid | None = None
        for key, where in misses.items():
            outcome = outcomes[key]
            if isinstance(outcome, FeatureRow):
                row = outcome
                if outcome.found:
                    fetched += len(where)
            elif isinstance(outcome, StoreUnavailable):
                row = self._fallback(key, outcome)
                if not row.found:
                    excused += len(where)
            else:  # malformed in the store: missing, for this entity alone
                row, malformed = self._missing, outcome
                excused += len(where)
            for index in where:
                rows[index] = row
        complete: list[FeatureRow] = rows  # type: ignore[assignment]  # every slot is set
        self._count(ids, complete, fetched, excused, tally)
        if self._missing_is_error:
            self._check_found(ids, complete, malformed)
        return complete

    def _fallback(self, key: str, error: StoreUnavailable) -> FeatureRow:
        """The row to use while the store is unavailable: the local cache's, even expired,
        else the defaults."""
        if self.config.on_redis_error == "error":
            raise FeatureStoreUnavailable(
                f"model '{self.model}' looks its features up in the feature store, which is "
                f'unavailable ({error}); [features] on_redis_error = "error"'
            )
        stale = self._cache.get_stale(key)
        return self._missing if stale is None else stale

    def _check_found(
        self, ids: list[str], rows: list[FeatureRow], malformed: FeatureDataInvalid | None = None
    ) -> None:
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
                + (f" (malformed in the store: {malformed.message})" if malformed else "")
            )

    async def aclose(self) -> None:
        await self._fetches.aclose()


class PendingRows:
    """One request's rows that wait for the store: ``future`` is done when they have come
    (or failed), then ``finish()`` writes the whole feature input into ``matrix`` (the
    array already in the request's inputs)."""

    __slots__ = (
        "_lookup",
        "_ids",
        "_rows",
        "_misses",
        "_waiter",
        "_overrides",
        "_matrix",
        "_tally",
        "future",
    )

    def __init__(
        self,
        lookup: FeatureLookup,
        ids: list[str],
        rows: list[FeatureRow | None],
        misses: dict[str, list[int]],
        waiter: Waiter,
        overrides: list[tuple[int, np.ndarray]],
        matrix: np.ndarray | None,
        tally: FeatureTally | None,
    ) -> None:
        self._lookup = lookup
        self._ids = ids
        self._rows = rows
        self._misses = misses
        self._waiter = waiter
        self._overrides = overrides
        self._matrix = matrix
        self._tally = tally
        self.future = waiter.future  # its own future: leaving early cancels nothing shared

    def finish(self) -> None:
        assert self._matrix is not None
        self._matrix[...] = feature_matrix(self.complete(), self._overrides)

    def complete(self) -> list[FeatureRow]:
        """Every row, the fetched ones included; raises what the caller is to be told."""
        return self._lookup.completed(
            self._ids, self._rows, self._misses, self._waiter, self._tally
        )
