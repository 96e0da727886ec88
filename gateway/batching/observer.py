"""What the batcher reports, as a protocol: the metrics module implements it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class BatchObserver(Protocol):
    def dispatched(self, rows: int, reason: str) -> None: ...
    def waited(self, seconds: float) -> None: ...
    def ran(self, seconds: float) -> None: ...
    def track_depth(self, waiting: Callable[[], int]) -> None: ...


class NullObserver:
    def dispatched(self, rows: int, reason: str) -> None:
        pass

    def waited(self, seconds: float) -> None:
        pass

    def ran(self, seconds: float) -> None:
        pass

    def track_depth(self, waiting: Callable[[], int]) -> None:
        pass
