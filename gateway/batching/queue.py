"""BatchQueue: concurrent requests in, one model run per batch, each caller its own rows back.

How a batch is cut (the order of the checks):

1. An instance worker wakes when a request is queued and it is free. It takes the
   oldest live request and, behind it, every queued request with the same key
   (output names, and each input's dtype and non-batch dimensions), in arrival
   order, up to ``max_batch_size`` rows. A request larger than that runs alone.
2. ``full``: the rows reached ``max_batch_size`` (or batching is off).
3. ``preferred``: the rows are one of ``preferred_batch_sizes``, or a prefix of the
   taken requests adds up to the largest preferred size below them (the rest goes
   back to the head of the queue).
4. Waiting pays only when more requests are known to be on their way: callers
   announce themselves with ``expect()`` before reading and decoding their body.
   While announced requests are outstanding, the worker waits for them, at most
   until the oldest request in the batch has waited ``max_delay_s`` (``delay``).
5. ``idle``: nothing else is on its way, so the batch runs now. A lone request on
   an idle model therefore never waits; under load, requests that arrive while a
   batch runs are queued and form the next batch.

Invariants: every request carries its own future (no id -> future map); a
request whose caller went away or whose deadline passed before its batch ran is
dropped and never runs; an exception in one run fails exactly the requests of
that batch; rows are handed back by position, as views of the batch output.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence

import numpy as np

from gateway.batching.assemble import batch_key, check_outputs, stack
from gateway.batching.clock import Clock, LoopClock
from gateway.batching.observer import BatchObserver, NullObserver
from gateway.batching.policy import BatchPolicy
from gateway.batching.request import (
    QueuedRequest,
    State,
    fail_all,
    hand_back,
    hung_up,
    total_rows,
)
from gateway.errors import DeadlineExceeded, ModelNotReady, QueueFull

# (instance, inputs, output names) -> outputs, in the order of the names
RunBatch = Callable[[int, Mapping[str, np.ndarray], Sequence[str]], Awaitable[list[np.ndarray]]]


class Ticket:
    """An announced request: while unredeemed, workers may wait a little for it."""

    __slots__ = ("_queue",)

    def __init__(self, queue: BatchQueue) -> None:
        self._queue: BatchQueue | None = queue
        queue._expected += 1

    def release(self) -> None:
        """The request arrived (or never will); idempotent."""
        if self._queue is not None:
            self._queue._expected -= 1
            self._queue._wake_cutter()
            self._queue = None


class BatchQueue:
    """One per model version; ``instances`` workers each run one batch at a time."""

    def __init__(
        self,
        run_batch: RunBatch,
        policy: BatchPolicy,
        instances: int = 1,
        observer: BatchObserver | None = None,
        clock: Clock | None = None,
        name: str = "model",
    ) -> None:
        self._run_batch = run_batch
        self._policy = policy
        self._observer = observer or NullObserver()
        self._clock = clock
        self._name = name
        self._instances = instances
        self._pending: deque[QueuedRequest] = deque()
        self._waiting = 0  # live requests in _pending
        self._running = 0  # batches in flight
        self._expected = 0
        self._work = asyncio.Event()
        self._arrival: asyncio.Future[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._workers: list[asyncio.Task[None]] = []
        self._closing = False

    @property
    def waiting(self) -> int:
        return self._waiting

    def start(self) -> None:
        if self._clock is None:
            self._clock = LoopClock()
        loop = asyncio.get_running_loop()
        self._workers = [
            loop.create_task(self._worker(i), name=f"batcher {self._name} #{i}")
            for i in range(self._instances)
        ]

    def expect(self) -> Ticket:
        return Ticket(self)

    async def submit(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        timeout_s: float | None = None,
        ticket: Ticket | None = None,
        gone: Callable[[], bool] | None = None,
    ) -> list[np.ndarray]:
        """Queue one request and wait for its output rows (in the order of ``outputs``).

        ``gone`` tells whether the caller has hung up; such a request is dropped (with
        ClientGone) when its batch is about to run.
        """
        if ticket is not None:
            ticket.release()
        if self._closing:
            raise ModelNotReady(f"{self._name} is shutting down and takes no new requests")
        policy = self._policy
        if self._waiting >= policy.max_queue_size:
            raise QueueFull(
                f"{self._name} already has {self._waiting} requests waiting "
                f"([batching] max_queue_size = {policy.max_queue_size}); retry after the "
                "Retry-After interval"
            )
        assert self._clock is not None, "start() the queue first"
        names = tuple(outputs)
        rows, key = batch_key(inputs, names, policy.batching)
        future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        request = QueuedRequest(inputs, names, rows, key, future, self._clock.now(), gone)
        timeout = timeout_s if timeout_s is not None else policy.default_timeout_s
        if timeout:
            request.timer = self._clock.call_at(
                request.queued_at + timeout, lambda: self._expire(request, timeout)
            )
        self._pending.append(request)
        self._waiting += 1
        self._observer.depth(self._waiting)
        self._work.set()
        self._wake_cutter()
        try:
            return await future
        except asyncio.CancelledError:
            self._drop(request)
            raise

    async def aclose(self) -> None:
        """Take no new requests, let queued and running ones finish, then stop the workers."""
        self._closing = True
        while self._waiting or self._running:
            self._idle.clear()
            self._work.set()
            await self._idle.wait()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    # -- the worker side -------------------------------------------------------------

    def _wake_cutter(self) -> None:
        """A worker waiting for announced requests re-checks (one arrived or gave up)."""
        if self._arrival is not None and not self._arrival.done():
            self._arrival.set_result(None)

    async def _worker(self, instance: int) -> None:
        while True:
            if not self._waiting:
                self._work.clear()
                self._idle.set()
                await self._work.wait()
                continue
            batch, reason = await self._cut()
            if batch:
                await self._dispatch(instance, batch, reason)

    async def _cut(self) -> tuple[list[QueuedRequest], str]:
        policy = self._policy
        batch = self._take(None, policy.max_batch_size)
        if not batch:
            return [], ""
        rows = total_rows(batch)
        if not policy.batching or rows >= policy.max_batch_size:
            return batch, "full"
        assert self._clock is not None
        waited = False
        until = batch[0].queued_at + policy.max_delay_s
        preferred = policy.preferred_batch_sizes
        while rows not in preferred and self._expected and self._clock.now() < until:
            waited = True
            await self._next_arrival(until)
            more = self._take(batch[0].key, policy.max_batch_size - rows)
            batch.extend(more)
            rows += total_rows(more)
            if rows >= policy.max_batch_size:
                return batch, "full"
        if rows in preferred:
            return batch, "preferred"
        trimmed = self._trim_to_preferred(batch)
        if len(trimmed) < len(batch):
            return trimmed, "preferred"
        return batch, "delay" if waited and self._clock.now() >= until else "idle"

    def _trim_to_preferred(self, batch: list[QueuedRequest]) -> list[QueuedRequest]:
        """The longest prefix of the batch whose rows add up to a preferred size; the rest
        goes back to the head of the queue. Without such a prefix, the whole batch."""
        sizes = self._policy.preferred_batch_sizes
        total, best = 0, 0
        for index, request in enumerate(batch):
            total += request.rows
            if total in sizes:
                best = index + 1
        if best == 0 or best == len(batch):
            return batch
        rest = batch[best:]
        for request in rest:
            if request.state is State.CLAIMED:
                request.state = State.QUEUED
                self._waiting += 1
        self._pending.extendleft(reversed(rest))
        return batch[:best]

    def _take(self, key: object, max_rows: int) -> list[QueuedRequest]:
        """Remove and return the oldest requests of one key, up to ``max_rows`` rows."""
        taken: list[QueuedRequest] = []
        skipped: list[QueuedRequest] = []
        rows = 0
        limit = max(max_rows, 1)
        pending = self._pending
        while pending:
            request = pending[0]
            if request.state is not State.QUEUED:
                pending.popleft()
                continue
            if key is None:
                key = request.key
            if request.key != key:
                skipped.append(pending.popleft())
                continue
            if taken and rows + request.rows > limit:
                break
            pending.popleft()
            request.state = State.CLAIMED
            taken.append(request)
            rows += request.rows
            if rows >= limit or not self._policy.batching:
                break
        if skipped:
            pending.extendleft(reversed(skipped))
        self._waiting -= len(taken)
        self._observer.depth(self._waiting)
        return taken

    async def _next_arrival(self, until: float) -> None:
        assert self._clock is not None
        arrival: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._arrival = arrival

        def give_up() -> None:
            if not arrival.done():
                arrival.set_result(None)

        timer = self._clock.call_at(until, give_up)
        try:
            await arrival
        finally:
            timer.cancel()
            self._arrival = None

    async def _dispatch(self, instance: int, batch: list[QueuedRequest], reason: str) -> None:
        assert self._clock is not None
        live = [r for r in batch if r.state is State.CLAIMED and not hung_up(r)]
        if not live:
            return
        now = self._clock.now()
        for request in live:
            request.state = State.RUNNING
            if request.timer is not None:
                request.timer.cancel()
            self._observer.waited(now - request.queued_at)
        rows = sum(r.rows for r in live)
        self._observer.dispatched(rows, reason)
        self._running += 1
        try:
            inputs = stack([r.inputs for r in live])
            outputs = await self._run_batch(instance, inputs, live[0].outputs)
            check_outputs(outputs, live[0].outputs, rows, len(live) > 1)
        except asyncio.CancelledError:
            fail_all(live, ModelNotReady(f"{self._name} stopped before this request ran"))
            raise
        except Exception as exc:  # one failed run fails exactly its own batch
            fail_all(live, exc)
        else:
            self._observer.ran(self._clock.now() - now)
            hand_back(live, outputs)
        finally:
            self._running -= 1

    # -- the caller side -------------------------------------------------------------

    def _drop(self, request: QueuedRequest) -> None:
        """Forget a request that has not started; a queued one leaves the queue lazily."""
        if request.state is State.QUEUED:
            self._waiting -= 1
            self._observer.depth(self._waiting)
        elif request.state is not State.CLAIMED:
            return
        request.state = State.GONE
        if request.timer is not None:
            request.timer.cancel()

    def _expire(self, request: QueuedRequest, timeout_s: float) -> None:
        if request.state not in (State.QUEUED, State.CLAIMED):
            return
        self._drop(request)
        if not request.future.done():
            request.future.set_exception(
                DeadlineExceeded(
                    f"request waited {timeout_s * 1000:g} ms (its timeout_ms) in the queue "
                    f"of {self._name} without starting; the model is busy"
                )
            )
