"""``[features]`` of ``model.toml`` and the key layout it names; pure.

The section says which input carries entity ids, how their keys are laid out,
which fields fill which input and what happens when a row is missing
(``gateway.repository.spec`` composes it into the model config). One HASH per
entity: the key comes from a template such as ``user:{user_id}`` (``KeyTemplate``),
the fields are the model's feature names, the values decimal numbers
(``parse_values``).
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from gateway.errors import FeatureDataInvalid
from gateway.validation import Section


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


class FeaturesSection(Section):
    """Features looked up by entity id (SPEC 5); see gateway.features."""

    entity_input: Annotated[str, Field(min_length=1)]
    key: Annotated[str, Field(min_length=1)]
    fields: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    input: Annotated[str, Field(min_length=1)]
    defaults: dict[str, float] = {}
    missing: Literal["default", "error"] = "default"
    local_ttl_ms: Annotated[float, Field(ge=0)] = 1000.0
    local_max_entries: Annotated[int, Field(ge=1)] = 100_000
    # the local cache's bound in bytes: keys, rows and a fixed overhead per entry
    local_max_bytes: Annotated[int, Field(ge=1)] = 64 * 1024 * 1024
    max_ids: Annotated[int, Field(ge=1)] = 4096  # entity ids per request at most
    redis_timeout_ms: Annotated[float, Field(gt=0)] = 20.0
    on_redis_error: Literal["default", "error"] = "default"
    # a CSV or JSONL file of entities in the model's directory: the model's own in-process
    # store, used when the gateway has neither --redis-url nor --features-file
    file: str | None = None

    @field_validator("file")
    @classmethod
    def _file_in_model_directory(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = value.replace("\\", "/").split("/")
        if not value.strip() or value.startswith("/") or ".." in parts:
            raise ValueError(
                "expected a file name relative to the model's directory, such as "
                f'"entities.csv" (no absolute path, no ".."), got "{value}"'
            )
        return value

    @field_validator("defaults", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        # TOML integers are fine as defaults (age = 35); strict mode would refuse them
        if isinstance(value, dict):
            return {k: float(v) if type(v) is int else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FeaturesSection:
        KeyTemplate.parse(self.key, self.entity_input)  # ValueError says what is wrong
        repeated = sorted({f for f in self.fields if self.fields.count(f) > 1})
        if repeated:
            raise ValueError(f"fields are listed more than once: {repeated}")
        unknown = sorted(set(self.defaults) - set(self.fields))
        if unknown:
            raise ValueError(f"defaults name fields that are not in fields: {unknown}")
        clash = sorted({self.entity_input, self.input} & set(self.fields))
        if clash or self.entity_input == self.input:
            raise ValueError(
                "entity_input, input and the fields must all have different names; "
                f"{clash or [self.input]} is used twice"
            )
        return self
