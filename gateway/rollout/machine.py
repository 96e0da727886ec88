"""RolloutState and ``advance``: where a rollout is, and where the next evaluation
takes it. Pure: the controller supplies the time and the step's figures, and applies
the weights ``routing`` gives.

    shadowing --pass--> stepping(0) --pass--> stepping(1) ... --pass--> promoted
        |                   |
        +------fail---------+--fail--> rolled_back        (any phase) --abort--> aborted

An evaluation with too few requests extends the phase by ``interval_s`` (the shadow
phase by ``shadow_s``) and keeps its figures counting from the phase's start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeGuard

from gateway.rollout.judge import Evaluation, GateResult, StepFigures, judge
from gateway.rollout.spec import RolloutSpec

Phase = Literal["shadowing", "stepping", "promoted", "rolled_back", "aborted"]
FINISHED: frozenset[str] = frozenset({"promoted", "rolled_back", "aborted"})
RUNNING: frozenset[str] = frozenset({"shadowing", "stepping"})
MAX_EVALUATIONS = 100  # kept in a rollout's state (GET shows them)


def running(document: Mapping[str, Any] | None) -> TypeGuard[Mapping[str, Any]]:
    """Whether a rollout's stored state (``to_json``'s form) is still running."""
    return document is not None and document.get("state") in RUNNING


@dataclass(frozen=True, slots=True)
class Judged:
    """One evaluation, as the rollout's history keeps it."""

    at: float
    phase: Phase
    step: int  # -1 in the shadow phase
    weight: float  # the canary's share of live traffic during it
    evaluation: Evaluation


@dataclass(frozen=True, slots=True)
class RolloutState:
    model: str
    stable: int
    spec: RolloutSpec
    phase: Phase
    step: int  # index into spec.steps while stepping; -1 while shadowing
    started: float  # when the current phase (or step) began
    deadline: float  # when it is judged
    history: tuple[Judged, ...] = field(default=())

    @classmethod
    def begin(cls, model: str, stable: int, spec: RolloutSpec, now: float) -> RolloutState:
        if spec.shadow_s > 0:
            return cls(model, stable, spec, "shadowing", -1, now, now + spec.shadow_s)
        return cls(model, stable, spec, "stepping", 0, now, now + spec.interval_s)

    @property
    def canary(self) -> int:
        return self.spec.version

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    @property
    def weight(self) -> float:
        """The canary's share of live traffic now (0-100)."""
        if self.phase == "stepping":
            return self.spec.steps[self.step]
        return 100.0 if self.phase == "promoted" else 0.0

    def routing(self) -> dict[str, object]:
        """The routing document this state serves with (a routing PUT's shape): the
        canary shadows the stable version, then takes its step's share of live traffic
        (a version taking live traffic cannot also be a shadow). At a 100% step the
        stable version takes no live traffic but a shadow copy of the canary's, so the
        gates still have it to compare with."""
        stable, canary = str(self.stable), str(self.canary)
        if self.phase == "shadowing":
            return {"weights": {stable: 100, canary: 0}, "shadow": {"version": self.canary}}
        if self.phase == "promoted":
            return {"weights": {stable: 0, canary: 100}}
        if self.phase != "stepping":
            return {"weights": {stable: 100, canary: 0}}
        share = self.weight
        if share >= 100:
            return {"weights": {stable: 0, canary: 100}, "shadow": {"version": self.stable}}
        return {"weights": {stable: 100 - share, canary: share}}


def to_json(state: RolloutState) -> dict[str, Any]:
    """The state as the control state keeps it and ``GET .../rollout`` shows it."""
    return {
        "model": state.model,
        "stable": state.stable,
        "canary": state.canary,
        "state": state.phase,
        "weight": state.weight,
        "step": state.step,
        "started": state.started,
        "deadline": state.deadline,
        "spec": state.spec.model_dump(),
        "evaluations": [
            {
                "at": judged.at,
                "phase": judged.phase,
                "step": judged.step,
                "weight": judged.weight,
                "verdict": judged.evaluation.verdict,
                "requests": judged.evaluation.requests,
                "gates": {
                    gate.name: {"value": gate.value, "limit": gate.limit, "passed": gate.passed}
                    for gate in judged.evaluation.gates
                },
            }
            for judged in state.history
        ],
    }


def from_json(document: Mapping[str, Any]) -> RolloutState:
    """The state back from ``to_json``'s form."""
    history = tuple(
        Judged(
            at=float(item["at"]),
            phase=item["phase"],
            step=int(item["step"]),
            weight=float(item["weight"]),
            evaluation=Evaluation(
                item["verdict"],
                int(item["requests"]),
                tuple(
                    GateResult(name, gate["value"], float(gate["limit"]), bool(gate["passed"]))
                    for name, gate in item["gates"].items()
                ),
            ),
        )
        for item in document["evaluations"]
    )
    return RolloutState(
        model=str(document["model"]),
        stable=int(document["stable"]),
        spec=RolloutSpec.model_validate(document["spec"]),
        phase=document["state"],
        step=int(document["step"]),
        started=float(document["started"]),
        deadline=float(document["deadline"]),
        history=history,
    )


def advance(
    state: RolloutState, now: float, figures: StepFigures
) -> tuple[RolloutState, Judged | None]:
    """The state after its deadline's evaluation on ``figures`` (the phase so far), and
    that evaluation; before the deadline, or once finished, the state unchanged."""
    if state.finished or now < state.deadline:
        return state, None
    evaluation = judge(state.spec.gates, figures)
    judged = Judged(now, state.phase, state.step, state.weight, evaluation)
    # a quiet model extends a step again and again: the record every worker re-reads
    # keeps the latest evaluations only
    history = (*state.history, judged)[-MAX_EVALUATIONS:]
    spec = state.spec
    if evaluation.verdict == "extend":
        more = spec.shadow_s if state.phase == "shadowing" else spec.interval_s
        return replace(state, deadline=now + more, history=history), judged
    if evaluation.verdict == "fail":
        return replace(state, phase="rolled_back", deadline=now, history=history), judged
    next_step = state.step + 1
    if next_step >= len(spec.steps):
        return replace(state, phase="promoted", deadline=now, history=history), judged
    return (
        replace(
            state,
            phase="stepping",
            step=next_step,
            started=now,
            deadline=now + spec.interval_s,
            history=history,
        ),
        judged,
    )


def abort(state: RolloutState, now: float) -> RolloutState:
    """Traffic back to the stable version at once (a finished rollout stays as it is)."""
    if state.finished:
        return state
    return replace(state, phase="aborted", deadline=now)
