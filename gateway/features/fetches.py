"""FetchBatcher: keys that missed the local cache, fetched in batches, each key once.

Fetches are batched the way inference is: while one fetch is out, the keys asked
for meanwhile gather and go together in the next, so the store sees one round
trip per batch of concurrent requests, never one per row. A key already pending
or in flight is not asked for again: its callers share the answer.

Each caller waits on its own ``Waiter`` (one future per request, not per key), so
a caller that gives up cancels nothing that others share.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from gateway.errors import FeatureDataInvalid
from gateway.features.cache import LocalCache
from gateway.features.store import FeatureStore, StoreUnavailable
from gateway.features.vectors import FeatureRow

log = logging.getLogger("gateway.features")

# what a key's fetch ended with: its row, or why there is none
Outcome = FeatureRow | StoreUnavailable | FeatureDataInvalid


class Waiter:
    """One caller's keys; its future is done once every key has an outcome."""

    __slots__ = ("outcomes", "remaining", "future")

    def __init__(self, future: asyncio.Future[None], count: int) -> None:
        self.outcomes: dict[str, Outcome] = {}
        self.remaining = count
        self.future = future

    def settle(self, key: str, outcome: Outcome) -> None:
        self.outcomes[key] = outcome
        self.remaining -= 1
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(None)


class FetchBatcher:
    def __init__(
        self,
        model: str,
        store: FeatureStore,
        fields: Sequence[str],
        defaults: np.ndarray,
        timeout_s: float,
        cache: LocalCache[FeatureRow],
        fetched: Callable[[int], None] | None = None,
    ) -> None:
        self._model = model
        self._store = store
        self._fields = tuple(fields)
        self._defaults = defaults
        self._timeout_s = timeout_s
        self._cache = cache
        self._fetched = fetched
        self._pending: dict[str, list[Waiter]] = {}  # for the next fetch
        self._in_flight: dict[str, list[Waiter]] = {}  # in the current one
        self._task: asyncio.Task[None] | None = None

    def ask(self, keys: Iterable[str], count: int) -> Waiter:
        """A waiter for ``count`` distinct keys, each joining a fetch."""
        loop = asyncio.get_running_loop()
        waiter = Waiter(loop.create_future(), count)
        pending, in_flight = self._pending, self._in_flight
        for key in keys:
            waiting = in_flight.get(key) or pending.get(key)
            if waiting is None:
                waiting = pending[key] = []
            waiting.append(waiter)
        if pending and self._task is None:
            # it starts on the next turn of the loop: keys asked for until then join in
            self._task = loop.create_task(self._fetch_pending())
        return waiter

    async def aclose(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _fetch_pending(self) -> None:
        try:
            while self._pending:
                batch = self._in_flight = self._pending
                self._pending = {}
                outcomes = await self._fetch(list(batch))
                for (key, waiters), outcome in zip(batch.items(), outcomes, strict=True):
                    for waiter in waiters:
                        waiter.settle(key, outcome)
                self._in_flight = {}
        finally:
            # cancelled (shutdown): nobody may be left waiting on a fetch that will not come
            stopped = StoreUnavailable("the gateway is shutting down")
            for waiting in (self._in_flight, self._pending):
                for key, waiters in waiting.items():
                    for waiter in waiters:
                        waiter.settle(key, stopped)
            self._task = None
            self._in_flight = {}
            self._pending = {}

    async def _fetch(self, keys: list[str]) -> Sequence[Outcome]:
        if self._fetched is not None:
            self._fetched(len(keys))
        try:
            outcomes = await self._store.fetch_rows(
                keys, self._fields, self._defaults, self._timeout_s
            )
        except StoreUnavailable as error:
            return [error] * len(keys)
        except Exception as error:  # a bug or an unexpected client error: fail, do not hang
            log.exception("feature fetch for model %s failed", self._model)
            return [StoreUnavailable(f"unexpected error: {error!r}")] * len(keys)
        cache = self._cache
        for key, outcome in zip(keys, outcomes, strict=True):
            if isinstance(outcome, FeatureRow):
                cache.put(key, outcome)
        return outcomes
