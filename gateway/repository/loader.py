"""Building one model's serving state from its directory, reusing what has not changed.

Runs off the event loop (it reads files and creates onnxruntime sessions). The
rule throughout: nothing that fails to load replaces something that serves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from gateway.batching.observer import BatchObserver
from gateway.errors import ConfigError
from gateway.features.lookup import FeatureLookup
from gateway.features.section import FeaturesSection
from gateway.monitoring.binning import Binner
from gateway.monitoring.profile import PROFILE_FILE, check_profile, load_profile
from gateway.monitoring.section import MonitoringSection
from gateway.monitoring.window import DriftWindow
from gateway.protocol.signature import Signature
from gateway.repository.layout import ModelDir
from gateway.repository.served import ServedModel
from gateway.repository.session import OnnxModel
from gateway.repository.spec import ModelConfig, VersionPolicy, load_model_config
from gateway.repository.version import ModelVersion, VersionInfo, version_summary
from gateway.routing.plan import RoutePlan

log = logging.getLogger("gateway.repository")


class RegistryObserver(Protocol):
    def model_loaded(self, model: str, version: int | None, outcome: str) -> None: ...
    def batch_observer(self, model: str, version: int) -> BatchObserver: ...
    def serving(self, versions: Iterable[tuple[str, int, str]]) -> None: ...


class FeatureWiring(Protocol):
    """Gives a model with [features] its lookup: the repository keeps the lookup with the
    model but does not build it (see gateway.service.feature_wiring)."""

    def prepare(
        self, entry: ModelDir, section: FeaturesSection, previous: FeatureLookup | None
    ) -> Callable[[], FeatureLookup]:
        """Raises ConfigError when the model cannot have a lookup; the callable gives it
        once the model's new state applies."""
        ...


class ModelLoader:
    def __init__(
        self, observer: RegistryObserver | None, features: FeatureWiring | None = None
    ) -> None:
        self._observer = observer
        self._features = features

    def build(
        self, entry: ModelDir, previous: ServedModel | None
    ) -> tuple[ServedModel, list[ModelVersion]]:
        """The model as it should serve now, and the versions of ``previous`` it retires.

        What fails never replaces what serves: a model.toml that does not parse, or
        whose [routing] names versions that are not there (or do not load), or a
        symlink out of the repository, leaves ``previous`` serving as it was; a
        version that fails to load is skipped (the policy takes the next one down)."""
        stamp = entry.stamp()
        present = tuple(entry.numbers)
        try:
            config = self._config(entry)
            features = self._prepare_features(entry, config.features, previous)
        except ConfigError as exc:
            return self._refuse(entry, previous, str(exc), stamp, present, {})
        build = _Build(entry, config, previous)
        policy = VersionPolicy.of(config)
        plan = RoutePlan.from_section(config.routing)
        available = list(present)
        build.failures.update(
            {
                v: "named by [model] versions but not in the repository"
                for v in policy.missing(available)
            }
        )
        chosen = policy.select(available)
        for number in policy.select(available, also=plan.versions):
            self._place(build, number)
        self._check_signatures(build)
        latest = policy.latest
        if latest is not None:
            # "latest:N" means the N highest versions that load: one that fails is
            # skipped and the next one down (already serving, or loaded now) serves
            serving = sum(1 for v in chosen if v in build.versions)
            for number in reversed(available):
                if serving >= latest:
                    break
                if number in chosen or number in build.failures:
                    continue
                if number in build.versions or self._place(build, number):
                    self._check_signatures(build)
                    serving += number in build.versions
        inputs = _caller_inputs(config, build.versions)
        routing, problems = plan.validate(build.versions, inputs)
        if problems:
            build.discard()
            reason = f"{entry.config_path}: [routing] not applied: " + "; ".join(problems)
            return self._refuse(entry, previous, reason, stamp, present, build.failures)
        if not build.versions and build.failures and available and previous and previous.versions:
            # what the new state names does not load (or is not there): keep the old one
            reason = "no version of the new state loads: " + "; ".join(
                f"version {v}: {why}" for v, why in sorted(build.failures.items())[:5]
            )
            return self._refuse(entry, previous, reason, stamp, present, build.failures)
        for number in build.fresh:
            self._observe(entry.name, number, "success")
        served = ServedModel(
            entry.name,
            config,
            MappingProxyType(build.versions),
            MappingProxyType(build.failures),
            None if available else "no version directories with a model.onnx",
            stamp,
            MappingProxyType(build.stamps),
            routing=routing if routing.active else None,
            file_routing=routing if routing.active else None,
            features=None if features is None else features(),
            present=present,
        )
        kept = {id(v) for v in build.versions.values()}
        return served, [v for v in build.old.values() if id(v) not in kept]

    def _config(self, entry: ModelDir) -> ModelConfig:
        """The model's config, if the model may load at all and the file is valid and
        names only versions that are in the repository."""
        if entry.problem is not None:
            raise ConfigError(entry.problem)
        if entry.config_problem is not None:
            raise ConfigError(entry.config_problem)
        config = load_model_config(entry.config_path)
        present = entry.numbers
        missing = [v for v in config.routing.versions if v not in present]
        if missing:
            raise ConfigError(
                f"{entry.config_path}: [routing] names version(s) "
                f"{version_summary(missing)} that are not in the repository "
                f"(versions there: {version_summary(present)})"
            )
        return config

    def _refuse(
        self,
        entry: ModelDir,
        previous: ServedModel | None,
        reason: str,
        stamp: object,
        present: tuple[int, ...],
        failures: Mapping[int, str],
    ) -> tuple[ServedModel, list[ModelVersion]]:
        """The new state of the model does not apply: say so, and keep ``previous``."""
        self._observe(entry.name, None, "failed")
        if previous is not None and previous.versions:
            serving = version_summary(previous.versions)
            log.warning(
                "model %s: %s; the previous config and versions (%s) keep serving",
                entry.name,
                reason,
                serving,
            )
            # the previous versions keep serving, and their rows say why nothing changed
            kept_failures = {v: why for v, why in failures.items() if v not in previous.versions}
            return replace(
                previous,
                failures=MappingProxyType(kept_failures),
                error=f"{reason} (previous config still serving: versions {serving})",
                stamp=stamp,
                present=present,
            ), []
        log.warning("model %s: %s", entry.name, reason)
        return ServedModel(
            entry.name,
            None,
            failures=MappingProxyType(dict(failures)),
            error=reason,
            stamp=stamp,
            present=present,
        ), []

    def _place(self, build: _Build, number: int) -> bool:
        """Make ``number`` serve: reuse the loaded version if nothing changed, else load
        it (on failure the previously loaded file, if any, carries on). Whether it serves."""
        entry = build.entry
        file_stamp = entry.version_stamp(number)
        old = build.old
        if build.same_config and number in old and build.old_stamps.get(number) == file_stamp:
            build.versions[number], build.stamps[number] = old[number], file_stamp
            return True
        try:
            build.versions[number] = self._load_version(entry, number, build.config)
        except ConfigError as exc:
            self._keep_previous(build, number, str(exc))
            return number in build.versions
        build.stamps[number] = file_stamp
        build.fresh.append(number)
        build.unchecked.append(number)
        return True

    def _keep_previous(self, build: _Build, number: int, reason: str) -> None:
        log.warning("model %s version %d failed to load: %s", build.entry.name, number, reason)
        self._observe(build.entry.name, number, "failed")
        if number in build.old:
            build.versions[number] = build.old[number]
            build.stamps[number] = build.old_stamps.get(number)
            build.failures[number] = f"{reason} (the previously loaded file still serves)"
        else:
            build.failures[number] = reason

    def _check_signatures(self, build: _Build) -> None:
        """Every version of a model takes the same inputs and gives the same outputs as the
        highest version that was already serving (or, on first load, the highest one)."""
        fresh, versions = build.unchecked, build.versions
        kept = [n for n in versions if n not in fresh]
        reference_number = max(kept) if kept else (max(versions) if versions else None)
        checking, build.unchecked = list(fresh), []
        if reference_number is None:
            return
        reference = versions[reference_number].signature
        for number in checking:
            candidate = versions[number]
            if candidate.signature == reference:
                continue
            candidate.release()
            del versions[number], build.stamps[number]
            build.fresh.remove(number)
            reason = (
                f"signature differs from version {reference_number}: "
                f"{_describe(candidate.signature)} instead of {_describe(reference)}"
            )
            self._keep_previous(build, number, reason)

    def _load_version(self, entry: ModelDir, number: int, config: ModelConfig) -> ModelVersion:
        refused = entry.refused.get(number)
        if refused is not None:
            raise ConfigError(refused)
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
        drift, problem = _drift_window(path.parent, config.monitoring, model.signature)
        if problem is not None:
            log.warning("model %s version %d: %s", entry.name, number, problem)
        return ModelVersion(info, config, model, observer, drift, problem)

    def _prepare_features(
        self, entry: ModelDir, section: FeaturesSection | None, previous: ServedModel | None
    ) -> Callable[[], FeatureLookup] | None:
        """For a model with [features]: what gives its lookup (raises ConfigError when it
        cannot have one)."""
        if section is None:
            return None
        if self._features is None:
            raise ConfigError(
                f"model '{entry.name}' has [features], and features are not wired into "
                "this repository (ModelRegistry(features=...))"
            )
        return self._features.prepare(entry, section, previous.features if previous else None)

    def _observe(self, model: str, version: int | None, outcome: str) -> None:
        if self._observer is not None:
            self._observer.model_loaded(model, version, outcome)


def _caller_inputs(config: ModelConfig, versions: Mapping[int, ModelVersion]) -> set[str]:
    """What a caller may send in the body: the inputs of the model, and the entity ids."""
    names = {n for v in versions.values() for n in v.signature.input_names}
    if config.features is not None:
        names.add(config.features.entity_input)
    return names


class _Build:
    """The state of one ``ModelLoader.build`` while it loads versions."""

    def __init__(self, entry: ModelDir, config: ModelConfig, previous: ServedModel | None) -> None:
        self.entry = entry
        self.config = config
        self.old: Mapping[int, ModelVersion] = previous.versions if previous else {}
        self.old_stamps: Mapping[int, object] = previous.version_stamps if previous else {}
        self.same_config = previous is not None and previous.config == config
        self.versions: dict[int, ModelVersion] = {}
        self.stamps: dict[int, object] = {}
        self.failures: dict[int, str] = {}
        self.fresh: list[int] = []  # loaded now (not reused)
        self.unchecked: list[int] = []  # loaded now, signature not yet compared

    def discard(self) -> None:
        """Release what was loaded for a state that will not apply."""
        for number in self.fresh:
            self.versions[number].release()
        self.fresh = []


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


def _drift_window(
    directory: Path, section: MonitoringSection, signature: Signature
) -> tuple[DriftWindow | None, str | None]:
    """The version's drift window, if it has a profile.json and monitoring is on; a
    profile that cannot be used is reported (and the version serves unmonitored)."""
    path = directory / PROFILE_FILE
    if not section.enabled or not path.exists():
        return None, None
    try:
        profile = load_profile(path)
        check_profile(profile, signature, path)
    except ConfigError as exc:
        return None, f"{exc}; serving without drift monitoring"
    return DriftWindow(Binner(profile), section.window_s, section.min_rows, time.monotonic), None


def _describe(signature: Signature) -> str:
    inputs = ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in signature.inputs)
    outputs = ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in signature.outputs)
    return f"inputs ({inputs}) -> outputs ({outputs})"
