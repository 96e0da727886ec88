"""Tally and Spread: a counter's and a histogram's values held as plain numbers on the
request path (no label lookup, no lock), moved into prometheus_client's own values by
``flush``."""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import Counter, Histogram


class Tally:
    """A counter's increments, held until the next flush."""

    __slots__ = ("_child", "count")

    def __init__(self, child: Counter) -> None:
        self._child = child
        self.count = 0

    def flush(self) -> None:
        if self.count:
            count, self.count = self.count, 0
            self._child.inc(count)


class Spread:
    """A histogram's observations, held as bucket counts until the next flush."""

    __slots__ = ("_bounds", "_buckets", "_sum", "counts", "total")

    def __init__(self, child: Histogram) -> None:
        self._bounds = list(child._upper_bounds)  # ends with +Inf
        self._buckets = child._buckets
        self._sum = child._sum
        self.counts = [0] * len(self._bounds)
        self.total = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self._bounds, amount)] += 1
        self.total += amount

    def flush(self) -> None:
        counts = self.counts
        for index, count in enumerate(counts):
            if count:
                self._buckets[index].inc(count)
                counts[index] = 0
        if self.total:
            self._sum.inc(self.total)
        self.total = 0.0
