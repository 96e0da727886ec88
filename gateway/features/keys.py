"""Redis key layout and value decoding for entity features; pure.

One HASH per entity: the key comes from a template such as ``user:{user_id}``,
the fields are the model's feature names, the values decimal numbers.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import FeatureDataInvalid


@dataclass(frozen=True, slots=True)
class KeyTemplate:
    """``template`` with exactly one placeholder, named after the entity input."""

    template: str
    entity: str

    @classmethod
    def parse(cls, template: str, entity: str) -> KeyTemplate:
        names = placeholders(template)
        if names != [entity]:
            raise ValueError(
                f"key template {template!r} must contain exactly one placeholder, "
                f"{{{entity}}} (the entity input); found {names or 'none'}"
            )
        return cls(template, entity)

    def key(self, entity_id: str) -> str:
        return self.template.replace("{" + self.entity + "}", entity_id)


def placeholders(template: str) -> list[str]:
    """The ``{name}`` fields of a key template; ValueError if it is malformed."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def parse_values(
    key: str, fields: Sequence[str], values: Sequence[bytes | str | None]
) -> tuple[list[float | None], list[str]]:
    """The numbers stored for ``fields`` (None where a field is absent), and the absent
    field names. A stored value that is not a number is an error naming key and field."""
    numbers: list[float | None] = []
    absent: list[str] = []
    for field, raw in zip(fields, values, strict=True):
        if raw is None:
            numbers.append(None)
            absent.append(field)
            continue
        try:
            number = float(raw)  # float() takes bytes as they come from Redis
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            shown = _as_bytes(raw)[:40].decode("utf-8", "replace")
            raise FeatureDataInvalid(
                f"feature store: {key} field '{field}' holds {shown!r}, which is not a number"
            )
        numbers.append(number)
    return numbers, absent


def _as_bytes(raw: bytes | str) -> bytes:
    return raw.encode() if isinstance(raw, str) else raw
