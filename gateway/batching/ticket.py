"""Ticket: a request announced to its batcher before its body is read and decoded."""

from __future__ import annotations

from typing import Protocol


class Announced(Protocol):
    def announce(self, count: int, wake: bool = True) -> None: ...


class Ticket:
    """An announced request: while unredeemed, a batch being cut may wait a little for it."""

    __slots__ = ("_queue",)

    def __init__(self, queue: Announced) -> None:
        self._queue: Announced | None = queue
        queue.announce(1)

    def release(self) -> None:
        """The request will not arrive after all (e.g. its body was invalid); idempotent."""
        queue = self._queue
        if queue is not None:
            self._queue = None
            queue.announce(-1)

    def redeem(self) -> None:
        """The request has arrived: it no longer counts as on its way (no wake-up: the
        arrival itself pumps)."""
        queue = self._queue
        if queue is not None:
            self._queue = None
            queue.announce(-1, False)
