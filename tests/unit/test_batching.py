"""The batching core through its public API, with a fake clock and a fake model run."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from gateway.batching.assemble import stack
from gateway.batching.policy import BatchPolicy
from gateway.batching.queue import BatchQueue
from gateway.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidRequest,
    ModelNotReady,
    QueueFull,
)


class FakeTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Virtual time: timers fire only when a test advances the clock."""

    def __init__(self) -> None:
        self.time = 100.0
        self._timers: list[tuple[float, int, FakeTimer, Callable[[], None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.time

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer()
        heapq.heappush(self._timers, (when, next(self._order), timer, callback))
        return timer

    async def advance(self, seconds: float) -> None:
        self.time += seconds
        while self._timers and self._timers[0][0] <= self.time:
            _, _, timer, callback = heapq.heappop(self._timers)
            if not timer.cancelled:
                callback()
        await settle()


class Recorder:
    def __init__(self) -> None:
        self.reasons: list[tuple[int, str]] = []
        self.waits: list[float] = []
        self.runs = 0

    def dispatched(self, rows: int, reason: str) -> None:
        self.reasons.append((rows, reason))

    def waited(self, seconds: float) -> None:
        self.waits.append(seconds)

    def ran(self, seconds: float) -> None:
        self.runs += 1

    def track_depth(self, waiting: Callable[[], int]) -> None:
        self.depth = waiting


class FakeModel:
    """y = 2x and s = row sums. Gated runs wait until the test opens them."""

    def __init__(self, gated: bool = True) -> None:
        self.batches: list[np.ndarray] = []
        self.open = not gated
        self.gates: list[asyncio.Event] = []
        self.running = 0
        self.max_running = 0
        self.fail_when: Callable[[np.ndarray], bool] = lambda x: False

    async def run(
        self, instance: int, parts: Sequence[Mapping[str, np.ndarray]], names: Sequence[str]
    ) -> list[np.ndarray]:
        x = stack(parts)["x"]
        self.batches.append(x.copy())
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if not self.open:
                gate = asyncio.Event()
                self.gates.append(gate)
                await gate.wait()
            if self.fail_when(x):
                raise RuntimeError("model exploded")
            table = {"y": x * 2, "s": x.sum(axis=tuple(range(1, x.ndim)))}
            return [table[name] for name in names]
        finally:
            self.running -= 1

    def release(self) -> None:
        """Finish every waiting run, and let later runs through."""
        self.open = True
        for gate in self.gates:
            gate.set()

    def release_first(self) -> None:
        """Finish the oldest waiting run only."""
        self.gates.pop(0).set()


async def settle(rounds: int = 20) -> None:
    """Let every ready callback run (no wall-clock waiting)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def rows(*values: float, width: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.array([[v] * width for v in values], dtype=np.float32)}


def answered(result: list[np.ndarray] | BaseException) -> list[np.ndarray]:
    """A request's outputs from ``asyncio.gather(..., return_exceptions=True)``."""
    assert not isinstance(result, BaseException), result
    return result


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coroutine)


def make(
    model: FakeModel, clock: FakeClock, recorder: Recorder, instances: int = 1, **policy: Any
) -> BatchQueue:
    queue = BatchQueue(
        model.run, BatchPolicy(**policy), instances, observer=recorder, clock=clock, name="m v1"
    )
    queue.start()
    return queue


def test_lone_request_runs_at_once() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(gated=False), FakeClock(), Recorder()
        queue = make(model, clock, recorder)
        (y,) = await queue.submit(rows(3), ["y"])
        np.testing.assert_array_equal(y, [[6, 6]])
        assert recorder.reasons == [(1, "idle")]
        assert clock.time == 100.0  # no virtual time had to pass
        await queue.aclose()

    run(scenario())


def test_requests_arriving_during_a_run_form_the_next_batch() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(), FakeClock(), Recorder()
        queue = make(model, clock, recorder)
        first = asyncio.ensure_future(queue.submit(rows(1), ["y"]))
        await settle()
        others = [asyncio.ensure_future(queue.submit(rows(v), ["y", "s"])) for v in (2, 3, 4)]
        await settle()
        assert len(model.batches) == 1 and queue.waiting == 3
        model.release()
        results = await asyncio.gather(first, *others)
        assert [b[:, 0].tolist() for b in model.batches] == [[1], [2, 3, 4]]
        assert recorder.reasons == [(1, "idle"), (3, "idle")]
        for value, (y, s) in zip((2, 3, 4), results[1:], strict=True):
            np.testing.assert_array_equal(y, [[2 * value, 2 * value]])
            np.testing.assert_array_equal(s, [2 * value])
        await queue.aclose()

    run(scenario())


def test_many_callers_get_exactly_their_own_rows() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(gated=False), FakeClock(), Recorder()
        queue = make(model, clock, recorder, max_batch_size=16)
        rng = random.Random(7)
        requests = []
        for i in range(300):
            n = rng.randint(1, 5)
            x = np.arange(n * 3, dtype=np.float32).reshape(n, 3) + 1000 * i
            requests.append(x)
        results = await asyncio.gather(*(queue.submit({"x": x}, ["y"]) for x in requests))
        for x, (y,) in zip(requests, results, strict=True):
            np.testing.assert_array_equal(y, x * 2)
        assert max(len(b) for b in model.batches) <= 16
        assert len(model.batches) < 300  # they really were batched
        await queue.aclose()

    run(scenario())


def test_only_compatible_requests_share_a_run() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(), FakeClock(), Recorder()
        queue = make(model, clock, recorder)
        blocker = asyncio.ensure_future(queue.submit(rows(0), ["y"]))
        await settle()
        submitted = [
            queue.submit(rows(1), ["y"]),
            queue.submit(rows(2, width=3), ["y"]),  # other non-batch shape
            queue.submit({"x": np.array([[3, 3]], dtype=np.float64)}, ["y"]),  # other dtype
            queue.submit(rows(4), ["y"]),
            queue.submit(rows(5), ["s"]),  # other outputs
        ]
        tasks = [asyncio.ensure_future(s) for s in submitted]
        await settle()
        model.release()
        await asyncio.gather(blocker, *tasks)
        groups = [b[:, 0].tolist() for b in model.batches]
        assert groups == [[0], [1, 4], [2], [3], [5]]
        await queue.aclose()

    run(scenario())


def test_max_batch_size_and_oversized_requests() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(), FakeClock(), Recorder()
        queue = make(model, clock, recorder, max_batch_size=4)
        blocker = asyncio.ensure_future(queue.submit(rows(0), ["y"]))
        await settle()
        tasks = [asyncio.ensure_future(queue.submit(rows(*range(1, 7)), ["y"]))]  # 6 > 4
        tasks += [asyncio.ensure_future(queue.submit(rows(v), ["y"])) for v in range(10, 15)]
        await settle()
        model.release()
        results = await asyncio.gather(blocker, *tasks)
        assert [len(b) for b in model.batches] == [1, 6, 4, 1]
        assert [r for _, r in recorder.reasons] == ["idle", "full", "full", "idle"]
        np.testing.assert_array_equal(results[1][0][:, 0], [2, 4, 6, 8, 10, 12])
        await queue.aclose()

    run(scenario())


def test_preferred_batch_sizes_cut_the_batch() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(), FakeClock(), Recorder()
        queue = make(model, clock, recorder, max_batch_size=8, preferred_batch_sizes={4})
        blocker = asyncio.ensure_future(queue.submit(rows(0), ["y"]))
        await settle()
        tasks = [asyncio.ensure_future(queue.submit(rows(v), ["y"])) for v in range(1, 7)]
        await settle()
        model.release()
        await asyncio.gather(blocker, *tasks)
        assert [b[:, 0].tolist() for b in model.batches] == [[0], [1, 2, 3, 4], [5, 6]]
        assert [r for _, r in recorder.reasons] == ["idle", "preferred", "idle"]
        await queue.aclose()

    run(scenario())


def test_waits_for_announced_requests_within_the_delay() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(gated=False), FakeClock(), Recorder()
        queue = make(model, clock, recorder, max_delay_s=0.002)
        ticket = queue.expect()  # a request is being read and decoded
        first = asyncio.ensure_future(queue.submit(rows(1), ["y"]))
        await settle()
        assert model.batches == []  # it waits for the announced one
        await clock.advance(0.001)
        second = asyncio.ensure_future(queue.submit(rows(2), ["y"], ticket=ticket))
        await asyncio.gather(first, second)
        assert [b[:, 0].tolist() for b in model.batches] == [[1, 2]]
        assert recorder.reasons == [(2, "idle")]
        await queue.aclose()

    run(scenario())


def test_delay_bounds_the_wait() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(gated=False), FakeClock(), Recorder()
        queue = make(model, clock, recorder, max_delay_s=0.002)
        ticket = queue.expect()  # announced, but slow to arrive
        first = asyncio.ensure_future(queue.submit(rows(1), ["y"]))
        await settle()
        await clock.advance(0.0015)
        assert model.batches == []
        await clock.advance(0.001)
        await first
        assert recorder.reasons == [(1, "delay")]
        assert recorder.waits == [pytest.approx(0.0025)]
        ticket.release()
        await queue.aclose()

    run(scenario())


def test_a_released_ticket_stops_the_wait() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(gated=False), FakeClock(), Recorder()
        queue = make(model, clock, recorder, max_delay_s=0.002)
        ticket = queue.expect()
        first = asyncio.ensure_future(queue.submit(rows(1), ["y"]))
        await settle()
        ticket.release()  # e.g. its body failed to decode
        ticket.release()  # idempotent
        await first
        assert recorder.reasons == [(1, "idle")]
        await queue.aclose()

    run(scenario())


def test_a_held_batch_still_goes_when_full_or_late() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(gated=False), FakeClock(), Recorder()
        queue = make(model, clock, recorder, max_delay_s=0.002, max_batch_size=3)
        ticket = queue.expect()
        held = [asyncio.ensure_future(queue.submit(rows(n), ["y"])) for n in (1, 2)]
        await settle()
        assert model.batches == []
        held.append(asyncio.ensure_future(queue.submit(rows(3), ["y"])))  # full now
        await settle()
        assert [b[:, 0].tolist() for b in model.batches] == [[1, 2, 3]]
        late = asyncio.ensure_future(queue.submit(rows(4), ["y"]))
        await settle()
        assert len(model.batches) == 1
        await clock.advance(0.0025)
        await asyncio.gather(*held, late)
        assert recorder.reasons == [(3, "full"), (1, "delay")]
        ticket.release()
        await queue.aclose()

    run(scenario())


class EarlyClock(FakeClock):
    """Timers that fire ``early`` seconds before they are due, as the event loop's
    whole-millisecond timers do against time.monotonic."""

    def __init__(self, early: float) -> None:
        super().__init__()
        self.early = early

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        return super().call_at(when - self.early, callback)


def test_a_hold_timer_that_fires_early_still_ends_the_hold() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(gated=False), EarlyClock(0.0005), Recorder()
        queue = make(model, clock, recorder, max_delay_s=0.002)
        ticket = queue.expect()  # announced, never arrives
        first = asyncio.ensure_future(queue.submit(rows(1), ["y"]))
        await settle()
        await clock.advance(0.0016)  # the timer fires at 1.5 ms, before the 2 ms are up
        assert model.batches, "the batch waited past its timer for the next arrival"
        await first
        assert recorder.reasons == [(1, "delay")]
        ticket.release()
        await queue.aclose()

    run(scenario())


def test_announced_requests_never_hold_a_batch_past_the_delay() -> None:
    """Tickets that stay outstanding (slow bodies) and a stream of arrivals: every batch
    is cut within max_delay of its oldest request, whichever way the timer drifts."""

    async def scenario() -> None:
        for early in (0.0, 0.0005, 0.0019):
            model, clock, recorder = FakeModel(gated=False), EarlyClock(early), Recorder()
            queue = make(model, clock, recorder, max_delay_s=0.002, max_batch_size=64)
            stuck = [queue.expect() for _ in range(3)]
            tasks = []
            for step in range(50):
                if step < 40:
                    tasks.append(asyncio.ensure_future(queue.submit(rows(step), ["y"])))
                await clock.advance(0.0003)
            await asyncio.gather(*tasks)
            assert recorder.waits and max(recorder.waits) <= 0.002 + 0.0003 + 1e-9
            assert len(model.batches) > 1  # later arrivals formed later batches
            for ticket in stuck:
                ticket.release()
            await queue.aclose()

    run(scenario())


def test_close_fails_queued_requests_and_refuses_new_ones() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(), FakeClock(), Recorder()
        queue = make(model, clock, recorder)
        running = asyncio.ensure_future(queue.submit(rows(0), ["y"]))
        await settle()
        queued = [asyncio.ensure_future(queue.submit(rows(v), ["y"])) for v in (1, 2)]
        await settle()
        queue.close()  # the version is gone while requests still wait
        for task in queued:
            with pytest.raises(ModelNotReady, match="unloaded"):
                await task
        with pytest.raises(ModelNotReady):
            await queue.submit(rows(3), ["y"])
        model.release()
        await running  # the run already started finishes
        assert len(model.batches) == 1

    run(scenario())


class FakePending:
    """Inputs completed later: ``finish`` writes ``value`` into x, or raises ``error``."""

    def __init__(self, inputs: dict[str, np.ndarray], value: float, error: Exception | None = None):
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inputs, self.value, self.error = inputs, value, error
        self.finished = 0

    def finish(self) -> None:
        self.finished += 1
        if self.error is not None:
            raise self.error
        self.inputs["x"][...] = self.value


def test_a_batch_waits_for_inputs_still_on_their_way() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(gated=False), FakeClock(), Recorder()
        queue = make(model, clock, recorder)
        late = rows(0)
        pending = FakePending(late, 7)
        first = asyncio.ensure_future(queue.submit(late, ["y"], pending=pending))
        second = asyncio.ensure_future(queue.submit(rows(2), ["y"]))
        await settle()
        assert model.batches == []  # the instance is taken, the batch waits
        pending.future.set_result(None)
        got = await asyncio.gather(first, second)
        assert [b[:, 0].tolist() for b in model.batches] == [[7], [2]]
        assert [g[0][:, 0].tolist() for g in got] == [[14], [4]]
        assert pending.finished == 1
        await queue.aclose()

    run(scenario())


def test_inputs_that_cannot_be_completed_fail_their_request_alone() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(), FakeClock(), Recorder()
        queue = make(model, clock, recorder)
        busy = asyncio.ensure_future(queue.submit(rows(0), ["y"]))
        await settle()
        requests = [rows(1), rows(2), rows(3)]
        pendings = [
            FakePending(requests[0], 10),
            FakePending(requests[1], 20, InvalidRequest("no features for 'u2'")),
            None,
        ]
        futures = [
            asyncio.ensure_future(queue.submit(r, ["y"], pending=pending))
            for r, pending in zip(requests, pendings, strict=True)
        ]
        await settle()
        model.release_first()
        await busy
        await settle()
        for pending in pendings[:2]:
            assert pending is not None
            pending.future.set_result(None)
        model.release()
        done = await asyncio.gather(*futures, return_exceptions=True)
        assert answered(done[0])[0][:, 0].tolist() == [20]
        assert isinstance(done[1], InvalidRequest)
        assert answered(done[2])[0][:, 0].tolist() == [6]
        assert [b[:, 0].tolist() for b in model.batches] == [[0], [10, 3]]
        await queue.aclose()

    run(scenario())


def test_a_batch_whose_inputs_all_fail_does_not_run() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(gated=False), FakeClock(), Recorder()
        queue = make(model, clock, recorder)
        bad = FakePending(rows(1), 0, InvalidRequest("nope"))
        failing = asyncio.ensure_future(queue.submit(bad.inputs, ["y"], pending=bad))
        await settle()
        bad.future.set_result(None)
        with pytest.raises(InvalidRequest):
            await failing
        assert model.batches == []
        assert (await queue.submit(rows(5), ["y"]))[0][:, 0].tolist() == [10]  # still serves
        # inputs already complete when submitted: finished at once, errors raised directly
        done = FakePending(rows(1), 0, InvalidRequest("nope"))
        done.future.set_result(None)
        with pytest.raises(InvalidRequest):
            await queue.submit(done.inputs, ["y"], pending=done)
        await queue.aclose()

    run(scenario())


def test_expired_requests_are_answered_and_never_run() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(), FakeClock(), Recorder()
        queue = make(model, clock, recorder)
        blocker = asyncio.ensure_future(queue.submit(rows(0), ["y"]))
        await settle()
        late = asyncio.ensure_future(queue.submit(rows(1), ["y"], timeout_s=0.05))
        patient = asyncio.ensure_future(queue.submit(rows(2), ["y"]))
        await settle()
        await clock.advance(0.06)
        with pytest.raises(DeadlineExceeded, match="waited 50 ms"):
            await late
        assert queue.waiting == 1
        model.release()
        await asyncio.gather(blocker, patient)
        assert [b[:, 0].tolist() for b in model.batches] == [[0], [2]]
        await queue.aclose()

    run(scenario())


def test_default_timeout_from_the_policy() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(), FakeClock(), Recorder()
        queue = make(model, clock, recorder, default_timeout_s=0.01)
        blocker = asyncio.ensure_future(queue.submit(rows(0), ["y"], timeout_s=1.0))
        await settle()
        late = asyncio.ensure_future(queue.submit(rows(1), ["y"]))
        await settle()
        await clock.advance(0.02)
        with pytest.raises(DeadlineExceeded):
            await late
        model.release()
        await blocker  # its own, longer timeout did not fire: it was already running
        await queue.aclose()

    run(scenario())


def test_queue_bound() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(), FakeClock(), Recorder()
        queue = make(model, clock, recorder, max_queue_size=2)
        blocker = asyncio.ensure_future(queue.submit(rows(0), ["y"]))
        await settle()
        waiting = [asyncio.ensure_future(queue.submit(rows(v), ["y"])) for v in (1, 2)]
        await settle()
        with pytest.raises(QueueFull, match="max_queue_size = 2"):
            await queue.submit(rows(3), ["y"])
        model.release()
        await asyncio.gather(blocker, *waiting)
        await queue.aclose()

    run(scenario())


def test_cancelled_callers_are_dropped_and_the_others_served() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(), FakeClock(), Recorder()
        queue = make(model, clock, recorder)
        blocker = asyncio.ensure_future(queue.submit(rows(0), ["y"]))
        await settle()
        tasks = [asyncio.ensure_future(queue.submit(rows(v), ["y"])) for v in (1, 2, 3)]
        await settle()
        tasks[1].cancel()
        await settle()
        assert queue.waiting == 2
        model.release()
        await blocker
        assert (await tasks[0])[0][0, 0] == 2 and (await tasks[2])[0][0, 0] == 6
        assert tasks[1].cancelled()
        assert [b[:, 0].tolist() for b in model.batches] == [[0], [1, 3]]
        (y,) = await queue.submit(rows(9), ["y"])  # and the next batch still runs
        assert y[0, 0] == 18
        await queue.aclose()

    run(scenario())


def test_a_caller_cancelled_during_its_run_does_not_disturb_the_batch() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(), FakeClock(), Recorder()
        queue = make(model, clock, recorder)
        blocker = asyncio.ensure_future(queue.submit(rows(0), ["y"]))
        await settle()
        tasks = [asyncio.ensure_future(queue.submit(rows(v), ["y"])) for v in (1, 2)]
        await settle()
        model.release_first()
        await blocker
        await settle()
        assert model.running == 1 and len(model.batches) == 2  # [1, 2] is running
        tasks[0].cancel()
        model.release()
        assert (await tasks[1])[0][0, 0] == 4
        assert tasks[0].cancelled()
        assert model.batches[1][:, 0].tolist() == [1, 2]
        await queue.aclose()

    run(scenario())


def test_a_failed_run_fails_exactly_its_batch() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(), FakeClock(), Recorder()
        model.fail_when = lambda x: bool((x == 13).any())
        queue = make(model, clock, recorder, max_batch_size=2)
        blocker = asyncio.ensure_future(queue.submit(rows(0), ["y"]))
        await settle()
        tasks = [asyncio.ensure_future(queue.submit(rows(v), ["y"])) for v in (12, 13, 14, 15)]
        await settle()
        model.release()
        results = await asyncio.gather(blocker, *tasks, return_exceptions=True)
        assert isinstance(results[1], RuntimeError) and isinstance(results[2], RuntimeError)
        assert answered(results[3])[0][0, 0] == 28 and answered(results[4])[0][0, 0] == 30
        await queue.aclose()

    run(scenario())


def test_outputs_that_cannot_be_split_fail_the_batch() -> None:
    async def scenario() -> None:
        clock, recorder = FakeClock(), Recorder()
        gate = asyncio.Event()

        async def scalar_model(
            instance: int, parts: Sequence[Mapping[str, np.ndarray]], names: Sequence[str]
        ) -> list[np.ndarray]:
            await gate.wait()
            return [np.array(1.0, np.float32)]  # rank 0: no rows to split

        queue = BatchQueue(scalar_model, BatchPolicy(), 1, recorder, clock)
        queue.start()
        blocker = asyncio.ensure_future(queue.submit(rows(0), ["y"]))
        await settle()
        tasks = [asyncio.ensure_future(queue.submit(rows(v), ["y"])) for v in (1, 2)]
        await settle()
        gate.set()
        await blocker  # alone: nothing to split
        for task in tasks:
            with pytest.raises(InferenceFailed, match="cannot be split"):
                await task
        await queue.aclose()

    run(scenario())


def test_batching_off_runs_requests_one_by_one() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(), FakeClock(), Recorder()
        queue = make(model, clock, recorder, max_batch_size=0)
        tasks = [asyncio.ensure_future(queue.submit(rows(v), ["y"])) for v in (1, 2, 3)]
        await settle()
        model.release()
        await asyncio.gather(*tasks)
        assert [len(b) for b in model.batches] == [1, 1, 1]
        assert {r for _, r in recorder.reasons} == {"full"}
        await queue.aclose()

    run(scenario())


def test_instances_run_batches_concurrently() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(), FakeClock(), Recorder()
        queue = make(model, clock, recorder, instances=2)
        tasks = []
        for value in (1, 2, 3):  # one at a time: a free instance takes each
            tasks.append(asyncio.ensure_future(queue.submit(rows(value), ["y"])))
            await settle()
        assert model.running == 2 and queue.waiting == 1
        model.release()
        await asyncio.gather(*tasks)
        assert model.max_running == 2
        await queue.aclose()

    run(scenario())


def test_close_drains_then_refuses() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(), FakeClock(), Recorder()
        queue = make(model, clock, recorder)
        tasks = [asyncio.ensure_future(queue.submit(rows(v), ["y"])) for v in (1, 2, 3)]
        await settle()
        closing = asyncio.ensure_future(queue.aclose())
        await settle()
        with pytest.raises(ModelNotReady, match="shutting down"):
            await queue.submit(rows(4), ["y"])
        model.release()
        await closing
        assert [r[0][0, 0] for r in await asyncio.gather(*tasks)] == [2, 4, 6]

    run(scenario())


def test_tickets_tell_how_long_their_request_waited_and_ran() -> None:
    async def scenario() -> None:
        model, clock, recorder = FakeModel(), FakeClock(), Recorder()
        queue = make(model, clock, recorder)
        alone = queue.expect()
        first = asyncio.ensure_future(queue.submit(rows(1), ["y"], ticket=alone))
        await settle()
        queued = queue.expect()
        second = asyncio.ensure_future(queue.submit(rows(2), ["y"], ticket=queued))
        await settle()
        assert (queued.queued_s, queued.ran_s) == (None, None)  # not run yet
        await clock.advance(0.003)
        model.release_first()
        await first
        assert alone.queued_s == 0.0 and alone.ran_s == pytest.approx(0.003)
        await settle()
        assert queued.queued_s == pytest.approx(0.003) and queued.ran_s is None
        await clock.advance(0.002)
        model.release()
        await second
        assert queued.ran_s == pytest.approx(0.002)
        await queue.aclose()

    run(scenario())
