"""``[routing]`` of ``model.toml`` (and the body of a routing PUT): weights by version,
a sticky key and a shadow version, validated as a document. ``RoutePlan`` is what
serves; ``gateway.repository.spec`` composes this section into the model config."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from gateway.validation import Section

_VERSION_KEY = re.compile(r"\A[1-9][0-9]{0,17}\Z")


class ShadowSection(Section):
    version: Annotated[int, Field(gt=0)]
    fraction: Annotated[float, Field(ge=0, le=1)] = 1.0


class RoutingSection(Section):
    weights: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = {}
    sticky_key: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    shadow: ShadowSection | None = None

    @field_validator("weights")
    @classmethod
    def _versions_and_sum(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k in value if not _VERSION_KEY.match(k)]
        if bad:
            shown = ", ".join(f'"{k[:20]}"' for k in bad[:5])
            raise ValueError(
                'weights are keyed by version numbers ("1", "2", ... at most 18 digits), '
                f"got {shown}"
            )
        if not value:
            raise ValueError(
                "weights is empty; name at least one version with a positive weight, "
                'e.g. {"1": 100}'
            )
        if not any(w > 0 for w in value.values()):
            raise ValueError(
                f"weights must have a positive sum, got {len(value)} weight(s) that are all 0"
            )
        return value

    @model_validator(mode="after")
    def _shadow_is_not_primary(self) -> RoutingSection:
        if self.shadow is not None and self.weights.get(str(self.shadow.version), 0) > 0:
            raise ValueError(
                f"shadow version {self.shadow.version} also takes primary traffic "
                "(weight > 0); a shadow must be a different version"
            )
        return self

    @property
    def versions(self) -> list[int]:
        """Every version routing names (they are loaded whatever the version policy)."""
        named = [int(k) for k in self.weights]
        if self.shadow is not None:
            named.append(self.shadow.version)
        return sorted(set(named))
