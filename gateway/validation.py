"""pydantic's ValidationError in words, for every place that validates a document:
model.toml (``repository.spec``), a routing PUT (``routing.plan``) and the ``gateway
serve`` flags (``cli``).

``describe`` writes one line per problem; each place passes how its readers name a
location (a TOML key, a JSON path, a flag) and what they are told about it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class Section(BaseModel):
    """The base of every configuration section (model.toml's and a routing PUT's):
    unknown keys are errors, values are not coerced, a parsed section is immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing pydantic rejected."""

    location: tuple[str | int, ...]  # field names, and indexes into lists
    kind: str  # pydantic's error type: "extra_forbidden", "int_type", "value_error", ...
    message: str  # pydantic's text; our own validators' without its "Value error, "
    given: Any  # the value rejected

    def path(self, separator: str = ".", indexes: bool = True) -> str:
        """The location joined: ``weights.1``; without list indexes if not ``indexes``."""
        parts = self.location if indexes else [p for p in self.location if not isinstance(p, int)]
        return separator.join(str(part) for part in parts)


def describe(
    exc: ValidationError,
    line: Callable[[Problem], str],
    limit: int | None = None,
    separator: str = "; ",
) -> str:
    """The first ``limit`` (default: all) problems in ``exc``, one ``line`` each."""
    return separator.join(line(problem) for problem in problems(exc)[:limit])


def problems(exc: ValidationError) -> list[Problem]:
    return [
        Problem(
            tuple(error["loc"]),
            error["type"],
            str(error["msg"]).removeprefix("Value error, "),
            error.get("input"),
        )
        for error in exc.errors()
    ]
