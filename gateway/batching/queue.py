"""BatchQueue: concurrent requests in, one model run per batch, each caller its own rows back.

Driven by events, not by worker tasks: a batch is cut and started whenever a request
arrives, an instance frees up, an announced request arrives or gives up, or a wait
times out (``_pump``); a request finding an idle model starts its run in ``submit``.

How a batch is cut (``_cut``), when an instance is free:

1. Take the oldest live request and, behind it, every queued request with the same
   key (output names, each input's dtype and non-batch dimensions), in arrival
   order, up to ``max_batch_size`` rows. A request larger than that runs alone.
2. ``full``: the rows reached ``max_batch_size`` (or batching is off).
3. ``preferred``: the rows are one of ``preferred_batch_sizes``, or a prefix of the
   taken requests adds up to the largest preferred size below them (the rest goes
   back to the head of the queue).
4. Waiting pays only when more requests are known to be on their way (``expect()``, once
   a body has arrived: a slow body never holds a batch): at most until the oldest has
   waited ``max_delay_s`` (then: ``delay``), even if the timer fires early.
5. ``idle``: nothing else is on its way, so the batch runs now: a lone request on an
   idle model never waits; under load, arrivals during a run form the next batch.

Invariants: every request carries its own future (no id -> future map); a request whose
caller went away or whose deadline passed before its batch ran is dropped and never
runs; an exception in one run fails exactly the requests of that batch; rows are handed
back by position, as views of the batch output; an instance runs one batch at a time,
and is free again only when its run has really finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial

import numpy as np

from gateway.batching.assemble import batch_key, check_outputs
from gateway.batching.clock import Clock, LoopClock, Timer
from gateway.batching.line import WaitingLine
from gateway.batching.observer import BatchObserver, NullObserver
from gateway.batching.policy import BatchPolicy
from gateway.batching.request import (
    PendingInputs,
    QueuedRequest,
    State,
    fail_all,
    finish_pending,
    hand_back,
    hung_up,
    record_run,
    still_pending,
    total_rows,
)
from gateway.batching.ticket import Ticket
from gateway.errors import DeadlineExceeded, ModelNotReady, QueueFull

# (instance, each request's inputs, output names) -> the outputs, in the names' order; the
# runner joins the inputs (``assemble.stack``) off the loop: numpy drops the GIL to copy
Inputs = Mapping[str, np.ndarray]
RunBatch = Callable[[int, Sequence[Inputs], Sequence[str]], Awaitable[list[np.ndarray]]]


class BatchQueue:
    """One per model version, in front of ``instances`` sessions that each run one batch
    at a time."""

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
        self._line = WaitingLine()
        self._free = list(range(instances))  # instances not running a batch
        self._instances = instances
        self._runs: set[asyncio.Future[list[np.ndarray]]] = set()  # strong references
        self._expected = 0
        self._hold: Timer | None = None  # wakes _pump when a wait for arrivals runs out
        self._held_head: QueuedRequest | None = None
        self._hold_until = 0.0
        self._drained: asyncio.Event | None = None
        self.closing = False  # takes no new requests
        self._observer.track_depth(lambda: self._line.count)

    @property
    def waiting(self) -> int:
        return self._line.count

    def start(self) -> None:
        """Bind to the running event loop (its clock, unless one was given)."""
        if self._clock is None:
            self._clock = LoopClock()

    def expect(self) -> Ticket:
        return Ticket(self)

    def announce(self, count: int, wake: bool = True) -> None:
        """``count`` more (or, negative, fewer) requests are on their way (see Ticket);
        ``wake``: a batch held for them may go now."""
        self._expected += count
        if count < 0 and wake:
            self._pump()
            self._check_drained()

    async def submit(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        timeout_s: float | None = None,
        ticket: Ticket | None = None,
        gone: Callable[[], bool] | None = None,
        pending: PendingInputs | None = None,
    ) -> list[np.ndarray]:
        """Queue one request and wait for its output rows (in the order of ``outputs``).

        ``gone`` tells whether the caller has hung up; such a request is dropped (with
        ClientGone) when its batch is about to run. ``pending``: inputs still being
        completed; the request's batch waits for them (with its instance) before it runs.
        """
        if self.closing:
            raise ModelNotReady(f"{self._name} is shutting down and takes no new requests")
        policy = self._policy
        if self._line.count >= policy.max_queue_size:
            raise QueueFull(
                f"{self._name} already has {self._line.count} requests waiting "
                f"([batching] max_queue_size = {policy.max_queue_size}); retry after the "
                "Retry-After interval"
            )
        clock = self._clock
        assert clock is not None, "start() the queue first"
        names = tuple(outputs)
        rows, key = batch_key(inputs, names, policy.batching)
        if ticket is not None:
            ticket.redeem()
        if pending is not None and pending.future.done():
            pending.finish()  # complete already: an ordinary request from here on
            pending = None
        if self._free and not self._line.count and not self._expected and pending is None:
            # an idle instance and nothing to wait for: this request is the batch, run
            # straight from here (no queue entry, no extra turn of the event loop)
            return await self._run_alone(inputs, names, rows, ticket)
        future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        now = clock.now()
        request = QueuedRequest(inputs, names, rows, key, future, now, gone, pending, ticket)
        timeout = timeout_s if timeout_s is not None else policy.default_timeout_s
        if timeout:
            request.timer = clock.call_at(
                request.queued_at + timeout, partial(self._expire, request, timeout)
            )
        self._line.add(request)
        self._pump()
        try:
            return await future
        except asyncio.CancelledError:
            self._drop(request)
            raise

    async def aclose(self) -> None:
        """Wait for announced requests, then take no new ones; return once the queued and
        running ones have finished."""
        while self._expected or self._line.count or self._runs:
            if self._expected == 0:
                self.closing = True  # nothing is on its way any more
            self._drained = asyncio.Event()
            self._pump()
            await self._drained.wait()
        self.closing = True

    def close(self) -> None:
        """Take no more requests and fail the queued ones: their version is gone (503)."""
        self.closing = True
        self._release_hold()
        while self._line.count:
            batch = self._line.take(self._policy.max_batch_size, self._policy.batching)
            fail_all(batch, ModelNotReady(f"{self._name} was unloaded before this request ran"))
        self._check_drained()

    def _check_drained(self) -> None:
        """Something aclose waits on may have changed: let it look again."""
        if self._drained is not None:
            self._drained.set()

    # -- cutting and running batches ---------------------------------------------

    def _pump(self) -> None:
        """Start batches while an instance is free and requests are queued."""
        while self._free and self._line.count:
            batch, reason = self._cut()
            if not batch:
                return  # holding for announced requests: an arrival or the timer pumps again
            self._start(self._free.pop(), batch, reason)

    def _cut(self) -> tuple[list[QueuedRequest], str]:
        policy = self._policy
        if self._hold is not None and self._still_holding():
            return [], ""
        batch = self._line.take(policy.max_batch_size, policy.batching)
        rows = total_rows(batch)
        if not batch or not policy.batching or rows >= policy.max_batch_size:
            return self._ending_hold(batch), "full"
        if rows in policy.preferred_batch_sizes:
            return self._ending_hold(batch), "preferred"
        assert self._clock is not None
        held = self._held_head is batch[0]
        # once the hold timer has fired, _hold_until is 0: the held batch goes
        until = self._hold_until if held else batch[0].queued_at + policy.max_delay_s
        now = self._clock.now()
        if self._expected and now < until and not self.closing:
            self._line.put_back(batch)
            if not held:
                self._release_hold()
                self._held_head = batch[0]
                self._hold_until = until
                self._hold = self._clock.call_at(until, self._hold_over)
            return [], ""
        self._release_hold()
        trimmed = self._line.trim_to_preferred(batch, policy.preferred_batch_sizes)
        if len(trimmed) < len(batch):
            return trimmed, "preferred"
        return batch, "delay" if held and now >= until else "idle"

    async def _run_alone(
        self,
        inputs: Mapping[str, np.ndarray],
        names: tuple[str, ...],
        rows: int,
        ticket: Ticket | None,
    ) -> list[np.ndarray]:
        assert self._clock is not None
        instance = self._free.pop()
        started = self._clock.now()
        self._observer.waited(0.0)
        self._observer.dispatched(rows, self._reason_alone(rows))
        run = asyncio.ensure_future(self._run_batch(instance, (inputs,), names))
        self._runs.add(run)
        # the instance is free again when the run has really finished, even if this
        # caller stops waiting: shield keeps a cancelled caller from cancelling the run
        run.add_done_callback(partial(self._release, instance))
        outputs = await asyncio.shield(run)
        check_outputs(outputs, names, rows, False)
        ran = self._clock.now() - started
        self._observer.ran(ran)
        if ticket is not None:
            ticket.queued_s, ticket.ran_s = 0.0, ran
        return outputs

    def _release(self, instance: int, run: asyncio.Future[list[np.ndarray]]) -> None:
        self._runs.discard(run)
        self._free.append(instance)
        if not run.cancelled():
            run.exception()  # retrieved here, so a caller that left does not leave it unseen
        self._pump()
        self._check_drained()

    def _reason_alone(self, rows: int) -> str:
        policy = self._policy
        if not policy.batching or rows >= policy.max_batch_size:
            return "full"
        return "preferred" if rows in policy.preferred_batch_sizes else "idle"

    def _ending_hold(self, batch: list[QueuedRequest]) -> list[QueuedRequest]:
        if batch and batch[0] is self._held_head:
            self._release_hold()  # the held batch goes: its timer must not hold the next
        return batch

    def _still_holding(self) -> bool:
        """Whether nothing that could end the hold of a batch has happened: re-cutting it
        would take and put back the same requests, per arrival (quadratic)."""
        assert self._clock is not None
        return (
            bool(self._expected)
            and not self.closing
            and not self._policy.preferred_batch_sizes
            and self._line.rows < self._policy.max_batch_size
            and self._clock.now() < self._hold_until
        )

    def _hold_over(self) -> None:
        """The hold timer fired, if early (whole-ms loop timers): the held batch goes."""
        self._hold = None
        self._hold_until = 0.0
        self._pump()

    def _release_hold(self) -> None:
        if self._hold is not None:
            self._hold.cancel()
        self._hold = self._held_head = None

    def _start(self, instance: int, batch: list[QueuedRequest], reason: str) -> None:
        assert self._clock is not None
        live = [r for r in batch if not hung_up(r)]
        if not live:
            self._free.append(instance)
            return
        now = self._clock.now()
        for request in live:
            request.state = State.RUNNING
            if request.timer is not None:
                request.timer.cancel()
            waited = now - request.queued_at
            self._observer.waited(waited)
            if request.ticket is not None:
                request.ticket.queued_s = waited
        self._observer.dispatched(total_rows(live), reason)
        waiting = still_pending(live)
        started = [now]  # when the model run starts: after the wait for inputs, if any
        if waiting:
            run = asyncio.ensure_future(self._run_when_complete(instance, live, waiting, started))
        else:
            finish_pending(live)
            run = asyncio.ensure_future(self._run_now(instance, live))
        self._runs.add(run)
        run.add_done_callback(partial(self._finished, instance, live, started))

    def _run_now(self, instance: int, batch: list[QueuedRequest]) -> Awaitable[list[np.ndarray]]:
        if not batch:  # every request failed to complete its inputs
            return asyncio.sleep(0, [])
        return self._run_batch(instance, [r.inputs for r in batch], batch[0].outputs)

    async def _run_when_complete(
        self,
        instance: int,
        batch: list[QueuedRequest],
        waiting: list[asyncio.Future[None]],
        started: list[float],
    ) -> list[np.ndarray]:
        """Hold the instance until the batch's inputs are complete, then run."""
        await asyncio.wait(waiting)
        assert self._clock is not None
        started[0] = self._clock.now()
        finish_pending(batch)
        return await self._run_now(instance, batch)

    def _finished(
        self,
        instance: int,
        batch: list[QueuedRequest],
        started: list[float],
        run: asyncio.Future[list[np.ndarray]],
    ) -> None:
        self._runs.discard(run)
        self._free.append(instance)  # the run is over: the instance is free again
        assert self._clock is not None
        rows = total_rows(batch)
        if not batch:  # nothing ran: every request failed to complete its inputs
            if not run.cancelled():
                run.exception()
        elif run.cancelled():
            fail_all(batch, ModelNotReady(f"{self._name} stopped before this request ran"))
        elif (error := run.exception()) is not None:
            fail_all(batch, error)  # one failed run fails exactly its own batch
        else:
            outputs = run.result()
            try:
                check_outputs(outputs, batch[0].outputs, rows, len(batch) > 1)
            except Exception as exc:
                fail_all(batch, exc)
            else:
                ran = self._clock.now() - started[0]
                self._observer.ran(ran)
                record_run(batch, ran)
                hand_back(batch, outputs)
        self._pump()
        self._check_drained()

    # -- the caller side -----------------------------------------------------------

    def _drop(self, request: QueuedRequest) -> None:
        """Forget a request that has not started; a queued one leaves the queue lazily."""
        if request.state is State.QUEUED:
            self._line.leave(request)
        elif request.state is not State.CLAIMED:
            return
        request.state = State.GONE
        if request.timer is not None:
            request.timer.cancel()
        self._check_drained()
        if request is self._held_head:
            self._release_hold()
            self._pump()

    def _expire(self, request: QueuedRequest, timeout_s: float) -> None:
        if request.state is not State.QUEUED:
            return
        self._drop(request)
        if not request.future.done():
            request.future.set_exception(
                DeadlineExceeded(
                    f"request waited {timeout_s * 1000:g} ms (its timeout_ms) in the queue "
                    f"of {self._name} without starting; the model is busy"
                )
            )
