"""``model.toml``: the typed, validated per-model configuration.

Every key has a default, unknown keys are errors, and an error names the file,
the key, what was expected and what was found.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.errors import ConfigError
from gateway.features.keys import KeyTemplate
from gateway.validation import Problem, describe

_LATEST_N = re.compile(r"^latest:([1-9][0-9]*)$")
_VERSION_KEY = re.compile(r"\A[1-9][0-9]{0,17}\Z")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ModelSection(_Section):
    versions: str | list[int] = "latest"

    @field_validator("versions", mode="before")
    @classmethod
    def _policy(cls, value: Any) -> str | list[int]:
        if isinstance(value, list) and value and all(type(v) is int and v > 0 for v in value):
            return sorted(set(value))
        if isinstance(value, str) and (value in ("latest", "all") or _LATEST_N.match(value)):
            return value
        raise ValueError(
            'expected "latest", "latest:N" (N >= 1), "all" or a non-empty list of '
            f"positive version numbers, got {_toml_value(value)}"
        )


class RuntimeSection(_Section):
    # None: CUDA when onnxruntime has it, then CPU
    providers: list[str] | None = None
    intra_op_threads: Annotated[int, Field(ge=0)] = 0  # 0: onnxruntime's default
    inter_op_threads: Annotated[int, Field(ge=0)] = 0
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    instances: Annotated[int, Field(ge=1, le=64)] = 1


class BatchingSection(_Section):
    max_batch_size: Annotated[int, Field(ge=0)] = 32
    max_queue_delay_ms: Annotated[float, Field(ge=0)] = 2.0
    preferred_batch_sizes: list[Annotated[int, Field(gt=0)]] = []
    max_queue_size: Annotated[int, Field(ge=1)] = 1024
    timeout_ms: Annotated[float, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def _preferred_fit(self) -> BatchingSection:
        too_big = [s for s in self.preferred_batch_sizes if s > self.max_batch_size > 0]
        if too_big:
            raise ValueError(
                f"preferred_batch_sizes {too_big} exceed max_batch_size {self.max_batch_size}"
            )
        return self


class ShadowSection(_Section):
    version: Annotated[int, Field(gt=0)]
    fraction: Annotated[float, Field(ge=0, le=1)] = 1.0


class RoutingSection(_Section):
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


class FeaturesSection(_Section):
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


class ModelConfig(_Section):
    model: ModelSection = ModelSection()
    runtime: RuntimeSection = RuntimeSection()
    batching: BatchingSection = BatchingSection()
    routing: RoutingSection = RoutingSection()
    features: FeaturesSection | None = None


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    """Which of the versions present on disk get loaded."""

    rule: str | tuple[int, ...]

    @classmethod
    def of(cls, config: ModelConfig) -> VersionPolicy:
        versions = config.model.versions
        return cls(tuple(versions) if isinstance(versions, list) else versions)

    def select(self, available: list[int], also: list[int] | None = None) -> list[int]:
        """The versions to load: the policy's, plus ``also`` (those routing names)."""
        chosen = set(self._select(available)) | {v for v in also or [] if v in available}
        return sorted(chosen)

    def _select(self, available: list[int]) -> list[int]:
        ordered = sorted(available)
        if isinstance(self.rule, tuple):
            return [v for v in ordered if v in self.rule]
        if self.rule == "all":
            return ordered
        match = _LATEST_N.match(self.rule)
        count = int(match.group(1)) if match else 1
        return ordered[-count:]

    @property
    def latest(self) -> int | None:
        """N for "latest" (1) and "latest:N": how many of the highest versions that load
        should serve. None for "all" and a list, which name their versions outright."""
        if isinstance(self.rule, tuple) or self.rule == "all":
            return None
        match = _LATEST_N.match(self.rule)
        return int(match.group(1)) if match else 1

    def missing(self, available: list[int]) -> list[int]:
        """Versions a list policy names that are not on disk."""
        if isinstance(self.rule, tuple):
            return [v for v in self.rule if v not in available]
        return []


def load_model_config(path: Path) -> ModelConfig:
    """Read and validate a model.toml; a missing file means every default."""
    if not path.exists():
        return ModelConfig()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    return parse_model_config(document, source=str(path))


def parse_model_config(document: dict[str, Any], source: str = "model.toml") -> ModelConfig:
    try:
        return ModelConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + describe(exc, _toml_problem)) from None


_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "list_type": "a list",
    "bool_type": "true or false",
    "model_type": "a table",
    "dict_type": "a table",
}


def _toml_problem(problem: Problem) -> str:
    key = _as_toml_key(problem.path(indexes=False))
    kind = problem.kind
    if kind == "extra_forbidden":
        return f"unknown key {key}"
    got = f"got {_toml_value(problem.given)}"
    if kind in _EXPECTED:
        return f"{key}: expected {_EXPECTED[kind]}, {got}"
    message = problem.message
    if kind == "value_error":  # our own validators already say what they got
        return f"{key}: {message}"
    return f"{key}: {message[0].lower() + message[1:]}, {got}"


def _as_toml_key(location: str) -> str:
    section, _, rest = location.partition(".")
    return f"[{section}] {rest}" if rest else f"[{section}]"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
