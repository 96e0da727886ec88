"""Ticket: a request announced to its batcher before its body is read and decoded."""

from __future__ import annotations

from typing import Protocol


class Announced(Protocol):
    def announce(self, count: int, wake: bool = True) -> None: ...


class Ticket:
    """An announced request: while unredeemed, a batch being cut may wait a little for it.

    Once the request has run, the ticket also tells how long it waited in the queue and
    how long its batch ran (seconds; None where it never got that far): the per-request
    log reports both.
    """

    __slots__ = ("_queue", "queued_s", "ran_s")

    def __init__(self, queue: Announced) -> None:
        self._queue: Announced | None = queue
        self.queued_s: float | None = None
        self.ran_s: float | None = None
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
