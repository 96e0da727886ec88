"""Shadow comparison (pure numpy) and the scheduler's bound."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import numpy as np

from gateway.routing.compare import compare
from gateway.routing.shadow import ShadowJob, ShadowScheduler


def test_argmax_disagreement_and_abs_diff() -> None:
    primary = [np.array([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]], np.float32)]
    shadow = [np.array([[0.8, 0.2], [0.7, 0.3], [0.5, 0.5]], np.float32)]
    result = compare(["p"], primary, shadow)
    assert result.rows == 3 and result.disagreeing_rows == 1 and result.disagrees
    assert abs(result.max_abs_diff - 0.3) < 1e-6
    same = compare(["p"], primary, primary)
    assert same.disagreeing_rows == 0 and same.max_abs_diff == 0.0


def test_one_dimensional_outputs_compare_by_value() -> None:
    result = compare(["label"], [np.array([1, 2, 3])], [np.array([1, 0, 3])])
    assert result.disagreeing_rows == 1 and result.max_abs_diff == 2.0


def test_incomparable_outputs() -> None:
    assert compare(["p"], [np.zeros((2, 3))], [np.zeros((2, 4))]).mismatch is not None
    assert compare(["p"], [np.zeros(2)], []).mismatch is not None


class Observer:
    def __init__(self) -> None:
        self.done: list[tuple[bool | None, float | None]] = []
        self.dropped = 0

    def shadow_done(
        self,
        model: str,
        primary: str,
        shadow: str,
        disagrees: bool | None,
        max_abs_diff: float | None,
    ) -> None:
        self.done.append((disagrees, max_abs_diff))

    def shadow_dropped(self, model: str, primary: str, shadow: str) -> None:
        self.dropped += 1


class GatedShadow:
    label = "2"

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def run(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> list[np.ndarray]:
        await self.gate.wait()
        return [inputs["x"] + 1]


def test_the_scheduler_drops_and_counts_beyond_its_bound() -> None:
    async def scenario() -> None:
        observer, target = Observer(), GatedShadow()
        scheduler = ShadowScheduler(observer, max_in_flight=2)
        x = np.zeros((1, 2), np.float32)
        job = ShadowJob("m", "r", "1", target, {"x": x}, ["y"], [x])
        assert scheduler.try_spawn(job) and scheduler.try_spawn(job)
        assert not scheduler.try_spawn(job)  # full: dropped, not queued
        assert observer.dropped == 1 and scheduler.in_flight == 2
        target.gate.set()
        await scheduler.aclose(timeout_s=5)
        assert observer.done == [(False, 1.0), (False, 1.0)]

    asyncio.run(scenario())


def test_close_cancels_what_does_not_finish_in_time() -> None:
    async def scenario() -> None:
        observer, target = Observer(), GatedShadow()
        scheduler = ShadowScheduler(observer)
        x = np.zeros((1, 2), np.float32)
        scheduler.try_spawn(ShadowJob("m", "r", "1", target, {"x": x}, ["y"], [x]))
        await scheduler.aclose(timeout_s=0.01)
        assert scheduler.in_flight == 0 and observer.done == []

    asyncio.run(scenario())
