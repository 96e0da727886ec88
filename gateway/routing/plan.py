"""RoutePlan: a model's routing, validated, as plain immutable data."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from gateway.errors import InvalidRequest
from gateway.repository.spec import RoutingSection


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """``weights``: (version, weight) pairs with weight > 0, by version. ``sticky_key``: a
    header or input whose value pins a caller to a version. ``shadow_version`` receives a
    mirrored ``shadow_fraction`` of the requests whose answers nobody sees."""

    weights: tuple[tuple[int, float], ...] = ()
    sticky_key: str | None = None
    shadow_version: int | None = None
    shadow_fraction: float = 0.0

    @classmethod
    def from_section(cls, section: RoutingSection) -> RoutePlan:
        weights = tuple(sorted((int(k), w) for k, w in section.weights.items() if w > 0))
        shadow = section.shadow
        return cls(
            weights=weights,
            sticky_key=section.sticky_key.lower() if section.sticky_key else None,
            shadow_version=shadow.version if shadow else None,
            shadow_fraction=shadow.fraction if shadow else 0.0,
        )

    @classmethod
    def from_json(cls, document: Any) -> RoutePlan:
        """Parse a PUT body shaped like the TOML section; 400 with the reasons if invalid."""
        if not isinstance(document, dict):
            raise InvalidRequest(
                'routing must be a JSON object like {"weights": {"1": 90, "2": 10}, '
                f'"sticky_key": "x-user-id", "shadow": {{"version": 3}}}}, got {document!r:.60}'
            )
        try:
            section = RoutingSection.model_validate(document)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'routing'}: "
                f"{str(e['msg']).removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            raise InvalidRequest(f"invalid routing: {problems}") from None
        return cls.from_section(section)

    @property
    def active(self) -> bool:
        return bool(self.weights) or self.shadow_version is not None

    def problems(self, loaded: Collection[int]) -> list[str]:
        """What is wrong with this plan given the versions that are loaded."""
        found = [f"version {v} is not loaded" for v, _ in self.weights if v not in loaded]
        if self.shadow_version is not None and self.shadow_version not in loaded:
            found.append(f"shadow version {self.shadow_version} is not loaded")
        return found

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"weights": {str(v): w for v, w in self.weights}}
        if self.sticky_key:
            document["sticky_key"] = self.sticky_key
        if self.shadow_version is not None:
            document["shadow"] = {"version": self.shadow_version, "fraction": self.shadow_fraction}
        return document
