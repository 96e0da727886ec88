"""LocalCache: a bounded LRU cache whose entries expire, in front of the feature store.

Single-threaded (event loop) by design. Time comes from an injected clock so
tests can move it; expiry is checked on read, and the least recently used entry
goes when the cache is full. An expired entry stays until it is replaced or
evicted: ``get_stale`` still finds it, for answering while the store is down.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


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
    ) -> None:
        if max_entries < 1 or ttl_s < 0 or not 0 <= jitter < 1:
            raise ValueError("max_entries must be >= 1, ttl_s >= 0 and 0 <= jitter < 1")
        self._max = max_entries
        self._ttl = ttl_s
        self._spread = ttl_s * jitter
        self._random = random
        self._now = now
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._now() >= expires:
            return None
        self._entries.move_to_end(key)
        return value

    def get_stale(self, key: str) -> V | None:
        """The entry even if it has expired (None only if it was never cached or evicted)."""
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def put(self, key: str, value: V) -> None:
        if self._ttl == 0:
            return  # caching is off
        expires = self._now() + self._ttl - self._spread * self._random()
        self._entries[key] = (expires, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
