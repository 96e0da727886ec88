"""Building one model's serving state from its directory, reusing what has not changed.

Runs off the event loop (it reads files and creates onnxruntime sessions). The
rule throughout: nothing that fails to load replaces something that serves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Protocol

from gateway.batching.observer import BatchObserver
from gateway.errors import ConfigError
from gateway.features.lookup import FeatureLookup, FeatureObserver
from gateway.features.store import FeatureStore, MemoryStore
from gateway.protocol.signature import Signature
from gateway.repository.layout import ModelDir
from gateway.repository.session import OnnxModel
from gateway.repository.spec import (
    FeaturesSection,
    ModelConfig,
    VersionPolicy,
    load_model_config,
)
from gateway.repository.version import ModelVersion, VersionInfo
from gateway.routing.plan import RoutePlan

log = logging.getLogger("gateway.repository")


class RegistryObserver(Protocol):
    def model_loaded(self, model: str, version: int | None, outcome: str) -> None: ...
    def batch_observer(self, model: str, version: int) -> BatchObserver: ...
    def feature_observer(self, model: str) -> FeatureObserver: ...
    def serving(self, versions: Iterable[tuple[str, int, str]]) -> None: ...


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One model as it stands: its ready versions and why others are not.

    ``failures`` may name a version that still serves: its new file failed to load
    and the previous one carries on.
    """

    name: str
    config: ModelConfig | None
    versions: Mapping[int, ModelVersion] = field(default_factory=dict)
    failures: Mapping[int, str] = field(default_factory=dict)
    error: str | None = None  # a problem with the model as a whole (e.g. bad model.toml)
    stamp: object = None  # the on-disk stamp this state was built from
    version_stamps: Mapping[int, object] = field(default_factory=dict)
    unloaded: bool = False  # taken out of service through the repository API
    routing: RoutePlan | None = None  # None: the highest version takes every request
    features: FeatureLookup | None = None  # [features]: the caller may send entity ids

    def __post_init__(self) -> None:
        # read on every request: worked out once
        highest = self.versions[max(self.versions)] if self.versions else None
        object.__setattr__(self, "default", highest)

    # without routing, traffic goes to the highest ready version
    default: ModelVersion | None = field(init=False, default=None, compare=False)

    @property
    def ready(self) -> bool:
        return bool(self.versions)


class ModelLoader:
    def __init__(
        self, observer: RegistryObserver | None, feature_store: FeatureStore | None = None
    ) -> None:
        self._observer = observer
        self._feature_store = feature_store or MemoryStore()

    def build(
        self, entry: ModelDir, previous: ServedModel | None
    ) -> tuple[ServedModel, list[ModelVersion]]:
        """The model as it should serve now, and the versions of ``previous`` it retires."""
        stamp = entry.stamp()
        try:
            config = load_model_config(entry.config_path)
        except ConfigError as exc:
            log.warning("model %s: %s", entry.name, exc)
            self._observe(entry.name, None, "failed")
            if previous is not None and previous.versions:
                # the whole new config is invalid: the previous one keeps serving
                return replace(
                    previous, error=f"{exc} (previous config still serving)", stamp=stamp
                ), []
            return ServedModel(entry.name, None, error=str(exc), stamp=stamp), []
        available = sorted(entry.versions)
        policy = VersionPolicy.of(config)
        failures = {
            v: "named by [model] versions but not in the repository"
            for v in policy.missing(available)
        }
        old = previous.versions if previous is not None else {}
        old_stamps = previous.version_stamps if previous is not None else {}
        same_config = previous is not None and previous.config == config
        versions: dict[int, ModelVersion] = {}
        stamps: dict[int, object] = {}
        fresh: list[int] = []
        named = config.routing.versions
        failures.update(
            {v: "named by [routing] but not in the repository" for v in named if v not in available}
        )
        for number in policy.select(available, also=named):
            file_stamp = entry.version_stamp(number)
            if same_config and number in old and old_stamps.get(number) == file_stamp:
                versions[number], stamps[number] = old[number], file_stamp
                continue
            try:
                versions[number] = self._load_version(entry, number, config)
            except ConfigError as exc:
                self._keep_previous(
                    entry.name, number, str(exc), old, old_stamps, versions, stamps, failures
                )
                continue
            stamps[number] = file_stamp
            fresh.append(number)
        self._check_signatures(entry.name, versions, fresh, old, old_stamps, stamps, failures)
        error = None if available else "no version directories with a model.onnx"
        routing, routing_error = _usable_routing(config, versions)
        served = ServedModel(
            entry.name,
            config,
            MappingProxyType(versions),
            MappingProxyType(failures),
            error or routing_error,
            stamp,
            MappingProxyType(stamps),
            routing=routing,
            features=self._features(entry.name, config.features, previous),
        )
        kept = {id(v) for v in versions.values()}
        return served, [v for v in old.values() if id(v) not in kept]

    def _keep_previous(
        self,
        model: str,
        number: int,
        reason: str,
        old: Mapping[int, ModelVersion],
        old_stamps: Mapping[int, object],
        versions: dict[int, ModelVersion],
        stamps: dict[int, object],
        failures: dict[int, str],
    ) -> None:
        log.warning("model %s version %d failed to load: %s", model, number, reason)
        self._observe(model, number, "failed")
        if number in old:
            versions[number], stamps[number] = old[number], old_stamps.get(number)
            failures[number] = f"{reason} (the previously loaded file still serves)"
        else:
            failures[number] = reason

    def _check_signatures(
        self,
        model: str,
        versions: dict[int, ModelVersion],
        fresh: list[int],
        old: Mapping[int, ModelVersion],
        old_stamps: Mapping[int, object],
        stamps: dict[int, object],
        failures: dict[int, str],
    ) -> None:
        """Every version of a model takes the same inputs and gives the same outputs as the
        highest version that was already serving (or, on first load, the highest one)."""
        kept = [n for n in versions if n not in fresh]
        reference_number = max(kept) if kept else (max(versions) if versions else None)
        if reference_number is None:
            return
        reference = versions[reference_number].signature
        for number in fresh:
            candidate = versions[number]
            if candidate.signature == reference:
                self._observe(model, number, "success")
                continue
            candidate.release()
            del versions[number], stamps[number]
            reason = (
                f"signature differs from version {reference_number}: "
                f"{_describe(candidate.signature)} instead of {_describe(reference)}"
            )
            self._keep_previous(model, number, reason, old, old_stamps, versions, stamps, failures)

    def _load_version(self, entry: ModelDir, number: int, config: ModelConfig) -> ModelVersion:
        path = entry.versions[number]
        model = OnnxModel(path, config.runtime)
        if config.features is not None:
            check_features(config.features, model.signature)
        model.warm_up()
        info = VersionInfo(
            model=entry.name,
            version=number,
            path=path,
            sha256=model.sha256,
            providers=tuple(model.providers),
        )
        log.info("loaded model %s version %d on %s", entry.name, number, ", ".join(model.providers))
        observer = self._observer.batch_observer(entry.name, number) if self._observer else None
        return ModelVersion(info, config, model, observer)

    def _features(
        self, model: str, section: FeaturesSection | None, previous: ServedModel | None
    ) -> FeatureLookup | None:
        """The model's feature lookup; kept (with its warm cache) while [features] is
        unchanged."""
        if section is None:
            return None
        if previous is not None and previous.features is not None:
            if previous.features.config == section:
                return previous.features
        store = self._feature_store
        if isinstance(store, MemoryStore):
            store.index(section.key, section.entity_input)
        observer = self._observer.feature_observer(model) if self._observer else None
        return FeatureLookup(model, section, store, time.monotonic, observer)

    def _observe(self, model: str, version: int | None, outcome: str) -> None:
        if self._observer is not None:
            self._observer.model_loaded(model, version, outcome)


def _usable_routing(
    config: ModelConfig, versions: Mapping[int, ModelVersion]
) -> tuple[RoutePlan | None, str | None]:
    """The file's routing, limited to the versions that did load (and why, if limited)."""
    plan = RoutePlan.from_section(config.routing)
    if not plan.active:
        return None, None
    problems = plan.problems(versions)
    if not problems:
        return plan, None
    weights = tuple((v, w) for v, w in plan.weights if v in versions)
    shadow = plan.shadow_version if plan.shadow_version in versions else None
    usable = RoutePlan(weights, plan.sticky_key, shadow, plan.shadow_fraction if shadow else 0.0)
    return (usable if usable.active else None), "routing: " + "; ".join(problems)


def check_features(section: FeaturesSection, signature: Signature) -> None:
    """[features] must fill an FP32 [n, len(fields)] input, under names the model does not
    use for anything else."""
    spec = signature.input(section.input)
    wanted = f"FP32 [-1, {len(section.fields)}]"
    if spec is None:
        raise ConfigError(
            f"[features] input = '{section.input}' is not an input of the model; its inputs "
            "are " + ", ".join(f"'{n}'" for n in signature.input_names)
        )
    shape = spec.shape
    if spec.datatype != "FP32" or len(shape) != 2 or shape[1] not in (-1, len(section.fields)):
        raise ConfigError(
            f"[features] input '{section.input}' must be {wanted} to take the "
            f"{len(section.fields)} fields, but the model has {spec.datatype} {list(shape)}"
        )
    taken = [n for n in (section.entity_input, *section.fields) if signature.input(n) is not None]
    if taken:
        raise ConfigError(
            f"[features] entity_input and fields must not be model inputs, but {taken} are"
        )


def _describe(signature: Signature) -> str:
    inputs = ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in signature.inputs)
    outputs = ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in signature.outputs)
    return f"inputs ({inputs}) -> outputs ({outputs})"
