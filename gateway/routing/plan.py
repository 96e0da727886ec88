"""RoutePlan: a model's routing, validated, as plain immutable data.

Validation happens in two steps, both before a plan applies: ``from_section`` /
``from_json`` check the shape (weights keyed by version numbers, finite, >= 0,
some positive), and ``validate`` checks the plan against the model it is for
(every version it names is loaded, the sticky key is an input of the model or an
HTTP header name). A plan that fails either step never serves a request.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from gateway.errors import InvalidRequest
from gateway.routing.section import RoutingSection
from gateway.validation import Problem, describe

# RFC 9110 token: what an HTTP header name may be
_HEADER_TOKEN = re.compile(r"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}\Z")
_EXAMPLE = '{"weights": {"1": 90, "2": 10}, "sticky_key": "x-user-id", "shadow": {"version": 3}}'


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """``weights``: (version, share) pairs with share > 0, by version, scaled so the
    largest is 1.0 (the sum is then finite whatever the declared weights were).
    ``declared``: the weights as they were given, zeros included (what GET shows).
    ``sticky_key``: a header (lower case) or input whose value pins a caller to a
    version. ``shadow_version`` receives a copy of a ``shadow_fraction`` of the
    requests whose answers nobody sees. ``rollout``: a running rollout set it (so a
    request routed by it says so in the payload log)."""

    weights: tuple[tuple[int, float], ...] = ()
    sticky_key: str | None = None
    shadow_version: int | None = None
    shadow_fraction: float = 0.0
    declared: tuple[tuple[int, float], ...] = ()
    rollout: bool = False

    @classmethod
    def from_section(cls, section: RoutingSection) -> RoutePlan:
        declared = tuple(sorted((int(k), float(w)) for k, w in section.weights.items()))
        shadow = section.shadow
        return cls(
            weights=_normalised(declared),
            sticky_key=section.sticky_key,
            shadow_version=shadow.version if shadow else None,
            shadow_fraction=shadow.fraction if shadow else 0.0,
            declared=declared,
        )

    @classmethod
    def from_json(cls, document: Any) -> RoutePlan:
        """Parse a PUT body shaped like the TOML section; 400 with the reasons if invalid."""
        if not isinstance(document, dict):
            raise InvalidRequest(
                f"routing must be a JSON object like {_EXAMPLE}, got {_brief(document)}"
            )
        if "weights" not in document and "shadow" not in document:
            raise InvalidRequest(
                f'routing must name "weights" (or a "shadow"), like {_EXAMPLE}; '
                f"got {_brief(document)}"
            )
        try:
            section = RoutingSection.model_validate(document)
        except ValidationError as exc:
            problems = describe(exc, _json_problem, limit=10)
            raise InvalidRequest(f"invalid routing: {problems}") from None
        return cls.from_section(section)

    @property
    def active(self) -> bool:
        return bool(self.weights) or self.shadow_version is not None

    @property
    def versions(self) -> list[int]:
        """Every version the plan names, zero weights and the shadow included."""
        named = {v for v, _ in self.declared} | {v for v, _ in self.weights}
        if self.shadow_version is not None:
            named.add(self.shadow_version)
        return sorted(named)

    def problems(self, loaded: Collection[int]) -> list[str]:
        """What is wrong with this plan given the versions that are loaded."""
        named = {v for v, _ in self.declared} | {v for v, _ in self.weights}
        found = [f"version {v} is not loaded" for v in sorted(named) if v not in loaded]
        if self.shadow_version is not None and self.shadow_version not in loaded:
            found.append(f"shadow version {self.shadow_version} is not loaded")
        return found

    def validate(
        self, loaded: Collection[int], inputs: Collection[str]
    ) -> tuple[RoutePlan, list[str]]:
        """The plan ready to apply to a model with these ``loaded`` versions, whose
        callers send ``inputs`` (input names, and the [features] entity input), and what
        is wrong with it (apply it only when that list is empty). A sticky key that
        names an input is kept as it is; one that names a header is lower-cased."""
        found = self.problems(loaded)
        key = self.sticky_key
        if key is None or key in inputs:
            return self, found
        if _HEADER_TOKEN.match(key):
            return replace(self, sticky_key=key.lower()), found
        names = ", ".join(f"'{n}'" for n in sorted(inputs)[:20]) or "none"
        found.append(
            f"sticky_key {_brief(key)} is neither an input of the model (inputs: {names}) "
            "nor an HTTP header name (1-256 ASCII letters, digits or !#$%&'*+-.^_`|~)"
        )
        return self, found

    def to_json(self) -> dict[str, Any]:
        declared = self.declared or self.weights
        document: dict[str, Any] = {"weights": {str(v): w for v, w in declared}}
        if self.sticky_key:
            document["sticky_key"] = self.sticky_key
        if self.shadow_version is not None:
            document["shadow"] = {"version": self.shadow_version, "fraction": self.shadow_fraction}
        return document


def _normalised(declared: tuple[tuple[int, float], ...]) -> tuple[tuple[int, float], ...]:
    """The positive weights divided by the largest: each in (0, 1], so their sum cannot
    overflow (1e308 + 1e308 is inf; 1.0 + 1.0 is not). Choices depend only on the ratios."""
    positive = [(v, w) for v, w in declared if w > 0]
    if not positive:
        return ()
    largest = max(w for _, w in positive)
    shares = ((v, w / largest) for v, w in positive)
    return tuple((v, share) for v, share in shares if share > 0)  # 5e-324 / 1e308 is 0


def _json_problem(problem: Problem) -> str:
    return f"{problem.path() or 'routing'}: {problem.message}"


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
