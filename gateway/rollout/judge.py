"""Judging one step of a rollout: the canary against the stable version over the step.

Pure: the figures come in (counted over every worker and replica by the caller), a
verdict and every gate's value go out. Too few canary requests extends the step
rather than judging it on a handful; a gate whose figure is not known (no shadow
runs, no profile to compare outputs with, no stable latency) is reported as not
judged and does not fail the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gateway.rollout.spec import Gates

Verdict = Literal["pass", "fail", "extend"]


@dataclass(frozen=True, slots=True)
class StepFigures:
    """What happened during one step (or the shadow phase)."""

    requests: int  # canary requests answered (in the shadow phase: its shadow runs)
    errors: int  # of those, answered 5xx (or failed shadow runs)
    canary_p99_s: float | None = None
    stable_p99_s: float | None = None
    shadow_runs: int = 0  # requests both versions ran, compared
    disagreements: int = 0  # of those, where the argmax differs in some row
    psi: float | None = None  # the canary's outputs against the stable version's


@dataclass(frozen=True, slots=True)
class GateResult:
    name: str
    value: float | None  # None: not known this step, so not judged
    limit: float
    passed: bool


@dataclass(frozen=True, slots=True)
class Evaluation:
    verdict: Verdict
    requests: int
    gates: tuple[GateResult, ...] = field(default=())

    @property
    def failed(self) -> list[str]:
        return [gate.name for gate in self.gates if not gate.passed]


def judge(gates: Gates, figures: StepFigures) -> Evaluation:
    """The verdict on a step: ``extend`` with fewer than ``min_requests`` canary
    requests, else ``fail`` if any gate fails, else ``pass``."""
    error_rate = figures.errors / figures.requests if figures.requests else None
    p99_ratio = None
    if figures.canary_p99_s is not None and figures.stable_p99_s:
        p99_ratio = figures.canary_p99_s / figures.stable_p99_s
    disagreement = figures.disagreements / figures.shadow_runs if figures.shadow_runs else None
    results = (
        _gate("error_rate", error_rate, gates.max_error_rate),
        _gate("p99_ratio", p99_ratio, gates.max_p99_ratio),
        _gate("disagreement", disagreement, gates.max_disagreement),
        _gate("psi", figures.psi, gates.max_psi),
    )
    if figures.requests < gates.min_requests:
        verdict: Verdict = "extend"
    elif all(result.passed for result in results):
        verdict = "pass"
    else:
        verdict = "fail"
    return Evaluation(verdict, figures.requests, results)


def _gate(name: str, value: float | None, limit: float) -> GateResult:
    return GateResult(name, value, limit, value is None or value <= limit)
