"""Time for the batcher, behind a protocol so tests can drive it with a fake clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` on the event loop once ``now()`` reaches ``when``."""
        ...


class LoopClock:
    """The monotonic clock, with the running event loop's timers.

    Not ``loop.time()``: uvloop's counts whole milliseconds, cached per loop turn, and
    queue and inference times are often well under a millisecond.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()

    def now(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        return self._loop.call_later(max(0.0, when - time.monotonic()), callback)
