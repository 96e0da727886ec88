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

from pydantic import Field, ValidationError, field_validator, model_validator

from gateway.errors import ConfigError
from gateway.features.section import FeaturesSection
from gateway.monitoring.section import MonitoringSection
from gateway.routing.section import RoutingSection
from gateway.validation import Problem, Section, describe

_LATEST_N = re.compile(r"^latest:([1-9][0-9]*)$")


class ModelSection(Section):
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


class RuntimeSection(Section):
    # None: CUDA when onnxruntime has it, then CPU
    providers: list[str] | None = None
    intra_op_threads: Annotated[int, Field(ge=0)] = 0  # 0: onnxruntime's default
    inter_op_threads: Annotated[int, Field(ge=0)] = 0
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    instances: Annotated[int, Field(ge=1, le=64)] = 1


class BatchingSection(Section):
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


class ModelConfig(Section):
    model: ModelSection = ModelSection()
    runtime: RuntimeSection = RuntimeSection()
    batching: BatchingSection = BatchingSection()
    routing: RoutingSection = RoutingSection()
    features: FeaturesSection | None = None
    monitoring: MonitoringSection = MonitoringSection()


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
