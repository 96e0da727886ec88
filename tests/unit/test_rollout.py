"""Rollouts without HTTP: the plan checked as a whole, each step judged on its figures,
and the state machine from shadow through the steps to promotion or rollback."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pytest

from gateway.errors import InvalidRequest
from gateway.metrics import Metrics
from gateway.monitoring.outputs import OutputSample, output_psi
from gateway.rollout.figures import (
    across_replicas,
    counts_from_json,
    counts_of,
    counts_to_json,
    histogram_quantile,
    step_figures,
)
from gateway.rollout.judge import StepFigures, judge
from gateway.rollout.machine import MAX_EVALUATIONS, RolloutState, abort, advance
from gateway.rollout.spec import Gates, RolloutSpec

GOOD = StepFigures(
    requests=500,
    errors=1,
    canary_p99_s=0.011,
    stable_p99_s=0.010,
    shadow_runs=500,
    disagreements=2,
    psi=0.01,
)


def test_the_documented_body_parses_with_its_defaults() -> None:
    spec = RolloutSpec.from_json(
        {
            "version": 3,
            "shadow_s": 60,
            "steps": [5, 25, 50, 100],
            "interval_s": 60,
            "gates": {"max_error_rate": 0.01, "max_p99_ratio": 1.5, "min_requests": 200},
        }
    )
    assert spec.steps == [5, 25, 50, 100] and spec.gates.max_psi == 0.25
    assert RolloutSpec.from_json({"version": 2}).gates == Gates()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([1, 2], "a rollout is a JSON object"),
        ({}, "version: Field required"),
        ({"version": 2, "steps": [25, 5]}, "steps must rise"),
        ({"version": 2, "steps": [50, 150]}, "in (0, 100]"),
        ({"version": 2, "steps": []}, "steps: List should have at least 1 item"),
        ({"version": 2, "interval_s": -1}, "interval_s: Input should be greater than 0"),
        ({"version": 2, "shadow_s": -5}, "shadow_s: Input should be greater than or equal to 0"),
        ({"version": 2, "gates": {"max_latency": 1}}, "gates.max_latency: unknown key"),
        ({"version": 2, "speed": "fast"}, "speed: unknown key (expected one of version"),
    ],
)
def test_invalid_bodies_say_what_is_wrong(document: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        RolloutSpec.from_json(document)
    assert message in caught.value.message


def test_a_good_step_passes_and_reports_every_gate() -> None:
    evaluation = judge(Gates(), GOOD)
    assert evaluation.verdict == "pass" and evaluation.failed == []
    values = {gate.name: gate.value for gate in evaluation.gates}
    assert values["error_rate"] == pytest.approx(0.002)
    assert values["p99_ratio"] == pytest.approx(1.1)
    assert values["disagreement"] == pytest.approx(0.004)
    assert values["psi"] == 0.01


@pytest.mark.parametrize(
    ("change", "gate"),
    [
        ({"errors": 50}, "error_rate"),
        ({"canary_p99_s": 0.02}, "p99_ratio"),
        ({"disagreements": 400}, "disagreement"),
        ({"psi": 0.9}, "psi"),
    ],
)
def test_each_gate_fails_the_step(change: dict[str, Any], gate: str) -> None:
    evaluation = judge(Gates(), _with(change))
    assert evaluation.verdict == "fail" and evaluation.failed == [gate]


def _with(change: dict[str, Any]) -> StepFigures:
    fields = {
        name: getattr(GOOD, name)
        for name in (
            "requests",
            "errors",
            "canary_p99_s",
            "stable_p99_s",
            "shadow_runs",
            "disagreements",
            "psi",
        )
    }
    return StepFigures(**{**fields, **change})


def test_too_few_requests_extend_and_unknown_figures_are_not_judged() -> None:
    assert judge(Gates(), _with({"requests": 10, "errors": 10})).verdict == "extend"
    unknown = StepFigures(requests=300, errors=0)
    evaluation = judge(Gates(), unknown)
    assert evaluation.verdict == "pass"
    assert [g.value for g in evaluation.gates if g.name != "error_rate"] == [None, None, None]


SPEC = RolloutSpec(version=2, shadow_s=10, steps=[25, 100], interval_s=5)


def test_a_good_canary_goes_from_shadow_through_every_step_to_promotion() -> None:
    state = RolloutState.begin("digits", 1, SPEC, now=0.0)
    assert state.phase == "shadowing" and state.weight == 0
    assert state.routing() == {"weights": {"1": 100, "2": 0}, "shadow": {"version": 2}}
    assert advance(state, 9.9, GOOD) == (state, None)  # not yet due
    state, judged = advance(state, 10.0, GOOD)
    assert (
        judged is not None and judged.phase == "shadowing" and judged.evaluation.verdict == "pass"
    )
    assert (state.phase, state.step, state.weight) == ("stepping", 0, 25)
    assert state.routing() == {"weights": {"1": 75, "2": 25}}
    state, _ = advance(state, 15.0, GOOD)
    assert state.weight == 100
    # at 100% the stable version gets a shadow copy, for the gates to compare with
    assert state.routing() == {"weights": {"1": 0, "2": 100}, "shadow": {"version": 1}}
    state, _ = advance(state, 20.0, GOOD)
    assert state.phase == "promoted" and state.finished and len(state.history) == 3
    assert state.routing() == {"weights": {"1": 0, "2": 100}}
    assert advance(state, 99.0, GOOD) == (state, None)


def test_a_bad_canary_is_rolled_back_at_the_first_evaluation_that_sees_it() -> None:
    state = RolloutState.begin("digits", 1, SPEC, now=0.0)
    state, _ = advance(state, 10.0, GOOD)
    state, judged = advance(state, 15.0, _with({"disagreements": 400, "psi": 0.8}))
    assert state.phase == "rolled_back" and state.weight == 0
    assert judged is not None and judged.evaluation.failed == ["disagreement", "psi"]
    assert state.routing() == {"weights": {"1": 100, "2": 0}}


def test_a_quiet_step_is_extended_not_judged() -> None:
    state = RolloutState.begin("digits", 1, RolloutSpec(version=2, shadow_s=0, interval_s=5), 0.0)
    assert state.phase == "stepping" and state.deadline == 5.0
    state, judged = advance(state, 5.0, _with({"requests": 3}))
    assert judged is not None and judged.evaluation.verdict == "extend"
    assert (state.step, state.started, state.deadline) == (0, 0.0, 10.0)


def test_an_abort_returns_traffic_at_once() -> None:
    state = RolloutState.begin("digits", 1, SPEC, now=0.0)
    state, _ = advance(state, 10.0, GOOD)
    aborted = abort(state, 11.0)
    assert aborted.phase == "aborted" and aborted.routing() == {"weights": {"1": 100, "2": 0}}
    assert abort(aborted, 12.0) is aborted


def test_histogram_quantile_interpolates_within_its_bucket() -> None:
    cumulative = [(0.01, 50.0), (0.1, 90.0), (1.0, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, cumulative) == pytest.approx(0.01)
    assert histogram_quantile(0.7, cumulative) == pytest.approx(0.01 + 0.09 * 20 / 40)
    assert histogram_quantile(0.99, cumulative) == pytest.approx(0.1 + 0.9 * 9 / 10)
    assert histogram_quantile(0.99, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert histogram_quantile(0.99, [(0.1, 1.0), (math.inf, 100.0)]) == 0.1  # in +Inf


def test_a_steps_figures_are_the_difference_of_two_snapshots_of_the_metrics() -> None:
    metrics = Metrics()
    metrics.request_done("m", "1", "v2", 200, 0.010)  # before the step: not counted
    before = counts_of(metrics.samples(), "m")
    for _ in range(95):
        metrics.request_done("m", "2", "v2", 200, 0.004)
    for _ in range(5):
        metrics.request_done("m", "2", "v2", 503, 0.004)
    for _ in range(100):
        metrics.request_done("m", "1", "v2", 200, 0.020)
        metrics.request_done("other", "2", "v2", 500, 1.0)  # another model
    for n in range(40):
        metrics.shadow_done("m", "1", "2", disagrees=n < 4, max_abs_diff=0.1)
    after = counts_of(metrics.samples(), "m")
    figures = step_figures(before, after, canary="2", stable="1", shadowing=False)
    assert (figures.requests, figures.errors) == (100, 5)
    assert (figures.shadow_runs, figures.disagreements) == (40, 4)
    assert figures.canary_p99_s is not None and figures.stable_p99_s is not None
    assert figures.canary_p99_s < figures.stable_p99_s  # the canary is the faster one
    shadow = step_figures(before, after, canary="2", stable="1", shadowing=True)
    assert (shadow.requests, shadow.errors) == (40, 0)  # its shadow runs
    assert judge(Gates(max_error_rate=0.01, min_requests=50), figures).failed == [
        "error_rate",
        "disagreement",
    ]


def test_replicas_share_their_counts_and_the_step_covers_all_of_them() -> None:
    """Each replica's counts go through the control state as JSON (the +Inf bucket and
    the (primary, shadow) pairs included) and come back equal; the step's figures sum
    the replicas, count a replica that joined mid-step from zero and leave out one
    that left."""
    a, b, c = Metrics(), Metrics(), Metrics()
    for metrics in (a, b):
        metrics.request_done("m", "2", "v2", 200, 0.004)
        metrics.shadow_done("m", "1", "2", disagrees=True, max_abs_diff=0.1)
    start = {"a": counts_of(a.samples(), "m"), "b": counts_of(b.samples(), "m")}
    for _ in range(30):
        a.request_done("m", "2", "v2", 200, 0.004)
        b.request_done("m", "2", "v2", 500, 20.0)  # beyond the last finite bucket
        c.request_done("m", "2", "v2", 200, 0.004)
    b.shadow_done("m", "1", "2", disagrees=False, max_abs_diff=0.0)
    shared = {name: counts_of(m.samples(), "m") for name, m in [("a", a), ("b", b), ("c", c)]}
    for counts in shared.values():
        assert counts_from_json(orjson.loads(orjson.dumps(counts_to_json(counts)))) == counts
    figures = step_figures(*across_replicas(start, shared), "2", "1", shadowing=False)
    assert (figures.requests, figures.errors, figures.shadow_runs) == (90, 30, 1)
    gone = {"a": shared["a"]}  # b left during the step
    assert step_figures(*across_replicas(start, gone), "2", "1", False).requests == 30


def test_an_output_sample_keeps_the_last_rows_within_its_bound() -> None:
    sample = OutputSample(capacity=10)
    for start in range(0, 25, 3):  # batches of 3 rows, wrapping the ring
        sample.observe({"y": np.arange(start, start + 3, dtype=np.float32)[:, None]})
    rows = sample.rows()["y"][:, 0]
    assert sorted(rows.tolist()) == list(range(17, 27))  # the last ten of 0..26
    sample.observe({"y": np.arange(40, dtype=np.float32)[:, None]})  # more than it holds
    assert sorted(sample.rows()["y"][:, 0].tolist()) == list(range(30, 40))
    sample.observe({"y": np.zeros((2, 3), dtype=np.float32), "label": np.array([b"x"])})
    assert set(sample.rows()) == {"y"}  # a reshaped tensor and BYTES are skipped


def test_output_psi_tells_moved_outputs_from_the_same_ones() -> None:
    rng = np.random.default_rng(3)

    def sample_of(scale: float, rows: int = 2000) -> OutputSample:
        sample = OutputSample()
        values = rng.normal(size=(rows, 2)).astype(np.float32)
        sample.observe({"sum": values * [1.0, scale], "argmax": values.argmax(axis=1)})
        return sample

    stable = sample_of(1.0)
    same = output_psi(stable, sample_of(1.0))
    assert same is not None and max(same.values()) < 0.1
    moved = output_psi(stable, sample_of(2.0))
    assert moved is not None and moved["sum[1]"] > 0.25 and moved["sum[0]"] < 0.1
    assert output_psi(stable, sample_of(1.0, rows=50)) is None  # too few rows to judge
    # the stable version's profile's bins where it has the column: one edge at 0 leaves
    # two bins, which a scale cannot move
    edges = {"sum[1]": (0.0,)}
    assert output_psi(stable, sample_of(2.0), edges)["sum[1]"] < 0.1  # type: ignore[index]


def test_a_p99_of_fewer_than_a_hundred_requests_is_not_judged() -> None:
    metrics = Metrics()
    before = counts_of(metrics.samples(), "m")
    for _ in range(99):
        metrics.request_done("m", "2", "v2", 200, 0.5)
    for _ in range(500):
        metrics.request_done("m", "1", "v2", 200, 0.001)
    figures = step_figures(before, counts_of(metrics.samples(), "m"), "2", "1", shadowing=False)
    assert figures.canary_p99_s is None and figures.stable_p99_s is not None
    assert judge(Gates(min_requests=50), figures).verdict == "pass"  # p99 ratio unknown


def test_a_step_extended_again_and_again_keeps_a_bounded_history() -> None:
    spec = RolloutSpec.from_json({"version": 2, "shadow_s": 1, "interval_s": 1})
    state = RolloutState.begin("m", 1, spec, 0.0)
    quiet = StepFigures(requests=0, errors=0)
    for _ in range(MAX_EVALUATIONS + 50):
        state, judged = advance(state, state.deadline, quiet)
        assert judged is not None and judged.evaluation.verdict == "extend"
    assert len(state.history) == MAX_EVALUATIONS and state.phase == "shadowing"
    assert state.history[-1].at == state.deadline - 1  # the latest are the ones kept
