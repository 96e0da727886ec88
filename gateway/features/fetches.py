"""FetchBatcher: keys that missed the local cache, fetched in batches, each key once.

Fetches are batched the way inference is: while one fetch is out, the keys asked
for meanwhile gather and go together in the next, so the store sees one round
trip per batch of concurrent requests, never one per row. A key already pending
or in flight is not asked for again: its callers share the answer.

Each caller waits on its own ``Waiter`` (one future per request, not per key), so
a caller that gives up cancels nothing that others share.

A batch goes to the store in chunks of at most ``FETCH_CHUNK`` keys, one after the
other, each under its own timeout: many concurrent callers (or one with many ids)
make more calls, never one call too large to answer within ``redis_timeout_ms``.

Store failures, malformed entities and rows answered with the defaults because the
store does not have their entity are logged, one line per model at most every
``REPORT_INTERVAL_S`` with the counts since the previous line (``FailureLog``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from gateway.errors import FeatureDataInvalid
from gateway.features.cache import LocalCache
from gateway.features.rows import FeatureRow
from gateway.features.stores import FeatureStore, StoreUnavailable

log = logging.getLogger("gateway.features")

# what a key's fetch ended with: its row, or why there is none
Outcome = FeatureRow | StoreUnavailable | FeatureDataInvalid

# keys per store call at most: a single Redis answers 256 keys of six fields in about
# 1-4 ms (4096 keys: 15-50 ms, past the default redis_timeout_ms of 20)
FETCH_CHUNK = 256
REPORT_INTERVAL_S = 10.0  # one failure log line per model at most this often
_SHOWN_DETAIL = 200


class FailureLog:
    """One model's store failures (by kind), malformed entities and rows of unknown
    entities (answered with the defaults), counted until the next log line, which is due
    at most once every ``interval_s``; pure, with an injected clock. The first of them
    after a quiet spell is reported at once."""

    def __init__(self, interval_s: float, now: Callable[[], float]) -> None:
        self._interval = interval_s
        self._now = now
        self._last_line: float | None = None
        self._since = 0.0  # when the first of the counts was made
        self._failures: dict[str, int] = {}
        self._keys = 0
        self._malformed = 0
        self._unknown = 0
        self._last_failure = ""
        self._last_malformed = ""
        self._last_unknown = ""

    @property
    def pending(self) -> bool:
        return bool(self._failures or self._malformed or self._unknown)

    def failed(self, kind: str, detail: str, keys: int) -> None:
        """A store call for ``keys`` keys failed."""
        if not self.pending:
            self._since = self._now()
        self._failures[kind] = self._failures.get(kind, 0) + 1
        self._keys += keys
        self._last_failure = detail

    def malformed(self, count: int, detail: str) -> None:
        """``count`` entities came back malformed (not a HASH, values not numbers)."""
        if not self.pending:
            self._since = self._now()
        self._malformed += count
        self._last_malformed = detail

    def unknown(self, rows: int, key: str) -> None:
        """``rows`` rows got the defaults: the store has no entity under their keys
        (``key``: one of them)."""
        if not self.pending:
            self._since = self._now()
        self._unknown += rows
        self._last_unknown = key

    def due_in(self) -> float:
        """Seconds until a line may be logged (0: now)."""
        if self._last_line is None:
            return 0.0
        return max(0.0, self._last_line + self._interval - self._now())

    def take(self) -> str | None:
        """The line for the counts so far (None if there are none); they start again."""
        if not self.pending:
            return None
        now = self._now()
        parts = []
        if self._failures:
            calls = sum(self._failures.values())
            kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self._failures.items()))
            parts.append(
                f"{calls} store call{'s' if calls != 1 else ''} failed ({kinds}; "
                f"{self._keys} keys answered from the local cache or defaults)"
            )
        if self._malformed:
            parts.append(
                f"{self._malformed} malformed entit{'ies' if self._malformed != 1 else 'y'} "
                "(answered as missing)"
            )
        if self._unknown:
            parts.append(
                f"{self._unknown} row{'s' if self._unknown != 1 else ''} of entities not in "
                "the store (answered with the [features] defaults)"
            )
        line = " and ".join(parts) + f" in the last {now - self._since:.1f} s"
        if self._failures:
            line += f"; last failure: {_printable(self._last_failure)}"
        if self._malformed:
            line += f"; last malformed: {_printable(self._last_malformed)}"
        if self._unknown:
            line += f"; last not in the store: {_printable(self._last_unknown)}"
        self._failures = {}
        self._keys = self._malformed = self._unknown = 0
        self._last_line = now
        return line


def _printable(text: str) -> str:
    """``text`` cut short, with control characters escaped (keys hold callers' ids)."""
    text = text[:_SHOWN_DETAIL]
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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
        now: Callable[[], float] = time.monotonic,
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
        self.failures = FailureLog(REPORT_INTERVAL_S, now)
        self._report_timer: asyncio.TimerHandle | None = None

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
        if self._report_timer is not None:
            self._report_timer.cancel()
            self._report_timer = None
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _fetch_pending(self) -> None:
        try:
            while self._pending:
                pending = self._pending
                if len(pending) <= FETCH_CHUNK:
                    batch = self._in_flight = pending
                    self._pending = {}
                else:  # the first FETCH_CHUNK keys now, the rest (and newcomers) next
                    batch = self._in_flight = dict(itertools.islice(pending.items(), FETCH_CHUNK))
                    for key in batch:
                        del pending[key]
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
            self.failures.failed(error.kind, str(error), len(keys))
            self._report()
            return [error] * len(keys)
        except Exception as error:  # a bug or an unexpected client error: fail, do not hang
            failure = StoreUnavailable(f"unexpected error: {error!r}")
            if self.failures.due_in() == 0:
                log.exception("feature fetch for model %s failed", self._model)
            self.failures.failed("unexpected", str(failure), len(keys))
            self._report()
            return [failure] * len(keys)
        cache = self._cache
        malformed: FeatureDataInvalid | None = None
        count = 0
        for key, outcome in zip(keys, outcomes, strict=True):
            if isinstance(outcome, FeatureRow):
                cache.put(key, outcome, outcome.vector.nbytes)
            else:  # not cached: asked for again, it is looked up again
                malformed = outcome
                count += 1
        if malformed is not None:
            self.failures.malformed(count, malformed.message)
            self._report()
        return outcomes

    def unknown(self, rows: int, key: str) -> None:
        """``rows`` rows were answered with the defaults because the store does not have
        their entity (``key``: one of them): logged with the failures, rate-limited."""
        self.failures.unknown(rows, key)
        if self._report_timer is None:
            self._report()

    def _report(self) -> None:
        """Log the failure counts now if a line is due, else once it is."""
        if self._report_timer is not None:
            return  # a line is already on its way
        delay = self.failures.due_in()
        if delay <= 0:
            self._log_failures()
        else:
            loop = asyncio.get_running_loop()
            self._report_timer = loop.call_later(delay, self._log_failures)

    def _log_failures(self) -> None:
        self._report_timer = None
        line = self.failures.take()
        if line is not None:
            log.warning("feature store, model %s: %s", self._model, line)
