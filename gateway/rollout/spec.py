"""RolloutSpec: the body of ``POST /admin/models/{model}/rollout``, checked as a whole.

``{"version": 3, "shadow_s": 60, "steps": [5, 25, 50, 100], "interval_s": 60,
"gates": {...}}``: the new version first receives shadow traffic for ``shadow_s``,
then each step's share of live traffic for ``interval_s``. Unknown keys, steps that
do not rise or pass 100, and negative times are refused with every problem named.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator

from gateway.errors import InvalidRequest
from gateway.validation import Problem, Section, describe

EXAMPLE = (
    '{"version": 3, "shadow_s": 60, "steps": [5, 25, 50, 100], "interval_s": 60, '
    '"gates": {"max_error_rate": 0.01, "max_p99_ratio": 1.5}}'
)


class Gates(Section):
    """What a step must show to pass. A rate or ratio above its maximum fails the step;
    fewer than ``min_requests`` canary requests in it extends it instead."""

    max_error_rate: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.01
    max_p99_ratio: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.5
    max_disagreement: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.02
    max_psi: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.25
    min_requests: Annotated[int, Field(ge=1, le=10_000_000)] = 200


class RolloutSpec(Section):
    version: Annotated[int, Field(ge=1)]
    shadow_s: Annotated[float, Field(ge=0, le=86400, allow_inf_nan=False)] = 60.0
    steps: Annotated[list[float], Field(min_length=1, max_length=20)] = [5, 25, 50, 100]
    interval_s: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)] = 60.0
    gates: Gates = Gates()

    @field_validator("steps")
    @classmethod
    def _rising_to_at_most_100(cls, steps: list[float]) -> list[float]:
        if any(not (0 < step <= 100) for step in steps):
            raise ValueError(f"each step is a share of traffic in (0, 100], got {steps}")
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"steps must rise, got {steps}")
        return steps

    @classmethod
    def from_json(cls, document: Any) -> RolloutSpec:
        """The spec, or InvalidRequest naming every problem."""
        if not isinstance(document, dict):
            raise InvalidRequest(f"a rollout is a JSON object like {EXAMPLE}, got {document!r:.60}")
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            problems = describe(exc, _problem, limit=10)
            raise InvalidRequest(f"invalid rollout: {problems}") from None


def _problem(problem: Problem) -> str:
    if problem.kind == "extra_forbidden":
        where = problem.path()
        known = Gates.model_fields if where.startswith("gates.") else RolloutSpec.model_fields
        return f"{where}: unknown key (expected one of {', '.join(known)})"
    return f"{problem.path() or 'rollout'}: {problem.message}"
