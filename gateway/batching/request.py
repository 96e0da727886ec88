"""One queued request and what can happen to it: run, hand back, fail, or drop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Protocol

import numpy as np

from gateway.batching.assemble import split_rows
from gateway.batching.clock import Timer
from gateway.batching.ticket import Ticket
from gateway.errors import ClientGone


class PendingInputs(Protocol):
    """Inputs still being completed (features being fetched, say): the request may run
    once ``future`` is done and ``finish()`` has completed its inputs in place.
    ``finish`` raises what the caller is to get instead, if the inputs cannot be
    completed; that fails the request alone, not its batch."""

    future: asyncio.Future[None]

    def finish(self) -> None: ...


class State(Enum):
    QUEUED = 1  # in the queue
    CLAIMED = 2  # taken while a batch is being cut
    RUNNING = 3
    GONE = 4  # cancelled by its caller, or expired: never runs


class QueuedRequest:
    __slots__ = (
        "inputs",
        "outputs",
        "rows",
        "key",
        "future",
        "queued_at",
        "timer",
        "state",
        "gone",
        "pending",
        "ticket",
    )

    def __init__(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: tuple[str, ...],
        rows: int,
        key: object,
        future: asyncio.Future[list[np.ndarray]],
        queued_at: float,
        gone: Callable[[], bool] | None,
        pending: PendingInputs | None = None,
        ticket: Ticket | None = None,
    ) -> None:
        self.gone = gone
        self.pending = pending
        self.ticket = ticket
        self.inputs = inputs
        self.outputs = outputs
        self.rows = rows
        self.key = key
        self.future = future
        self.queued_at = queued_at
        self.timer: Timer | None = None
        self.state = State.QUEUED


def hung_up(request: QueuedRequest) -> bool:
    if request.gone is None or not request.gone():
        return False
    request.state = State.GONE
    if request.timer is not None:
        request.timer.cancel()
    if not request.future.done():
        request.future.set_exception(ClientGone())
    return True


def total_rows(batch: list[QueuedRequest]) -> int:
    return sum(r.rows for r in batch)


def hand_back(batch: list[QueuedRequest], outputs: list[np.ndarray]) -> None:
    if len(batch) == 1:
        parts = [outputs]
    else:
        parts = split_rows(outputs, [r.rows for r in batch])
    for request, part in zip(batch, parts, strict=True):
        if not request.future.done():
            request.future.set_result(part)


def record_run(batch: list[QueuedRequest], seconds: float) -> None:
    for request in batch:
        if request.ticket is not None:
            request.ticket.ran_s = seconds


def fail_all(batch: list[QueuedRequest], exc: BaseException) -> None:
    for request in batch:
        if not request.future.done():
            request.future.set_exception(exc)


def still_pending(batch: list[QueuedRequest]) -> list[asyncio.Future[None]]:
    """What the batch must wait for before it can run."""
    return [
        r.pending.future for r in batch if r.pending is not None and not r.pending.future.done()
    ]


def finish_pending(batch: list[QueuedRequest]) -> None:
    """Complete the inputs of the batch's requests; one that cannot be completed gets its
    error and leaves the batch (in place)."""
    if all(r.pending is None for r in batch):
        return
    kept: list[QueuedRequest] = []
    for request in batch:
        if request.pending is not None:
            try:
                request.pending.finish()
            except Exception as exc:
                if not request.future.done():
                    request.future.set_exception(exc)
                continue
        kept.append(request)
    batch[:] = kept
