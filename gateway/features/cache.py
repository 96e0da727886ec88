"""LocalCache: an LRU cache bounded in entries and bytes whose entries expire, in front of
the feature store.

Single-threaded (event loop) by design. Time comes from an injected clock so
tests can move it; expiry is checked on read, and the least recently used
entries go when the cache holds more than ``max_entries`` entries or
``max_bytes`` bytes. Every entry is charged its key's bytes, the size its caller
gives for the value and ``ENTRY_OVERHEAD`` (the dict slots, tuples and object
headers that hold it), so the count is kept in O(1) per insert and eviction.

Expired entries are freed without a scan: a second ordered dict keeps the keys
in the order they were stored, and each ``put`` frees up to ``SWEEP_PER_PUT``
expired entries from its front. Entries live at most ``ttl_s`` after they were
stored, so everything that expired is gone at most ``ttl_s`` after it was
stored, as long as rows keep arriving. Until then ``get_stale`` still finds an
expired entry, for answering while the store is down (while it is down nothing
is stored, so nothing is swept either).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")

# bytes an entry costs beyond its key and value: two ordered-dict slots and links, the
# (expires, value, cost) tuple, the float, the row tuple and the array header (measured
# with tracemalloc on CPython 3.12, rounded up)
ENTRY_OVERHEAD = 512
SWEEP_PER_PUT = 4  # expired entries freed per put at most: amortised, never a long pause
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class LocalCache(Generic[V]):
    """``jitter``: each entry lives between ``(1 - jitter) * ttl_s`` and ``ttl_s``, drawn
    at random, so that keys cached together (say, after a restart) do not all expire in
    the same instant and send every caller to the store at once."""

    def __init__(
        self,
        max_entries: int,
        ttl_s: float,
        now: Callable[[], float],
        jitter: float = 0.0,
        random: Callable[[], float] = random.random,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if max_entries < 1 or max_bytes < 1 or ttl_s < 0 or not 0 <= jitter < 1:
            raise ValueError(
                "max_entries and max_bytes must be >= 1, ttl_s >= 0 and 0 <= jitter < 1"
            )
        self._max = max_entries
        self._max_bytes = max_bytes
        self._ttl = ttl_s
        self._spread = ttl_s * jitter
        self._random = random
        self._now = now
        # LRU order: key -> (expires, value, bytes charged)
        self._entries: OrderedDict[str, tuple[float, V, int]] = OrderedDict()
        self._stored: OrderedDict[str, None] = OrderedDict()  # the order of put
        self.bytes = 0  # charged for the entries held now

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._now() >= entry[0]:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def get_stale(self, key: str) -> V | None:
        """The entry even if it has expired (None if it was never cached, or evicted or
        swept since)."""
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def put(self, key: str, value: V, size: int = 0) -> None:
        """Cache ``value``, which takes ``size`` bytes besides its key."""
        if self._ttl == 0:
            return  # caching is off
        cost = (len(key) if key.isascii() else 4 * len(key)) + size + ENTRY_OVERHEAD
        if cost > self._max_bytes:
            return  # it could never fit
        entries, stored = self._entries, self._stored
        old = entries.pop(key, None)
        if old is not None:
            self.bytes -= old[2]
            del stored[key]
        now = self._now()
        entries[key] = (now + self._ttl - self._spread * self._random(), value, cost)
        stored[key] = None
        self.bytes += cost
        self._sweep(now)
        while len(entries) > self._max or self.bytes > self._max_bytes:
            evicted, entry = entries.popitem(last=False)
            del stored[evicted]
            self.bytes -= entry[2]

    def _sweep(self, now: float) -> None:
        """Free up to SWEEP_PER_PUT expired entries, the oldest stored first."""
        entries, stored = self._entries, self._stored
        for _ in range(SWEEP_PER_PUT):
            if not stored:
                return
            key = next(iter(stored))
            entry = entries[key]
            if entry[0] > now:
                return
            del stored[key]
            del entries[key]
            self.bytes -= entry[2]
