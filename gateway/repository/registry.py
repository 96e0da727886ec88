"""ModelRegistry: which model versions are loaded and serving.

The whole serving state is one immutable ``RepositoryState`` held in one
attribute. Readers take the reference once per request; a reload builds a new
state off to the side and replaces the reference in a single assignment, so a
request sees either the old state or the new one, never a mix.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from gateway.batching.observer import BatchObserver
from gateway.errors import ConfigError, ModelNotFound, ModelNotReady
from gateway.repository.layout import ModelDir, is_valid_model_name, scan_repository
from gateway.repository.session import OnnxModel
from gateway.repository.spec import ModelConfig, VersionPolicy, load_model_config
from gateway.repository.version import ModelVersion, VersionInfo

log = logging.getLogger("gateway.repository")


class RegistryObserver(Protocol):
    def model_loaded(self, model: str, version: int, outcome: str) -> None: ...
    def batch_observer(self, model: str, version: int) -> BatchObserver: ...


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One model as it stands: its ready versions and why the others are not."""

    name: str
    config: ModelConfig | None
    versions: Mapping[int, ModelVersion] = field(default_factory=dict)
    failures: Mapping[int, str] = field(default_factory=dict)
    error: str | None = None  # a problem with the model as a whole (e.g. bad model.toml)

    @property
    def default(self) -> ModelVersion | None:
        """Without routing, traffic goes to the highest ready version."""
        return self.versions[max(self.versions)] if self.versions else None

    @property
    def ready(self) -> bool:
        return bool(self.versions)


@dataclass(frozen=True, slots=True)
class RepositoryState:
    models: Mapping[str, ServedModel]
    skipped: tuple[str, ...] = ()
    loaded: bool = True

    @property
    def problems(self) -> list[str]:
        found = list(self.skipped)
        for model in self.models.values():
            if model.error:
                found.append(f"{model.name}: {model.error}")
            found.extend(f"{model.name} v{v}: {why}" for v, why in model.failures.items())
        return found


_EMPTY = RepositoryState(models=MappingProxyType({}), loaded=False)


class ModelRegistry:
    """Loads the repository and answers "which version serves this request"."""

    def __init__(
        self,
        root: Path,
        observer: RegistryObserver | None = None,
    ) -> None:
        self.root = root
        self.state: RepositoryState = _EMPTY
        self._observer = observer
        # loading is slow and runs off the event loop, one model at a time
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")

    async def __aenter__(self) -> ModelRegistry:
        await self.load()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Let every version finish its queued and running requests, then release it all."""
        versions = [v for m in self.state.models.values() for v in m.versions.values()]
        self.state = _EMPTY
        await asyncio.gather(*(v.aclose() for v in versions))
        self._loader.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Release everything at once, without waiting for queued requests (see aclose)."""
        for model in self.state.models.values():
            for version in model.versions.values():
                version.release()
        self.state = _EMPTY
        self._loader.shutdown(wait=False, cancel_futures=True)

    async def load(self) -> RepositoryState:
        """Scan and load the whole repository, then make it the serving state."""
        loop = asyncio.get_running_loop()
        state = await loop.run_in_executor(self._loader, self._build_state)
        for model in state.models.values():
            for version in model.versions.values():
                version.start()
        self.state = state
        return state

    def resolve(self, model: str, version: str | None) -> ModelVersion:
        served = self.model(model)
        if version is None:
            chosen = served.default
            if chosen is None:
                raise ModelNotReady(f"model '{model}' has no loaded version: {_why(served)}")
            return chosen
        number = _parse_version(model, version)
        ready = served.versions.get(number)
        if ready is not None:
            return ready
        if number in served.failures:
            raise ModelNotReady(
                f"version {number} of model '{model}' is not ready: {served.failures[number]}"
            )
        available = ", ".join(str(v) for v in sorted(served.versions)) or "none"
        raise ModelNotFound(
            f"model '{model}' has no version {number}; loaded versions: {available}"
        )

    def model(self, name: str) -> ServedModel:
        served = self.state.models.get(name)
        if served is None:
            if not is_valid_model_name(name):
                raise ModelNotFound(
                    f"'{name[:140]}' is not a valid model name "
                    "(expected 1-128 characters of A-Z, a-z, 0-9, '_', '.', '-')"
                )
            known = ", ".join(sorted(self.state.models)) or "none"
            raise ModelNotFound(f"unknown model '{name}'; models in the repository: {known}")
        return served

    def _build_state(self) -> RepositoryState:
        scan = scan_repository(self.root)
        for problem in scan.skipped:
            log.warning("skipped %s", problem)
        models = {name: self._load_model(entry) for name, entry in scan.models.items()}
        return RepositoryState(MappingProxyType(models), tuple(scan.skipped))

    def _load_model(self, entry: ModelDir) -> ServedModel:
        try:
            config = load_model_config(entry.config_path)
        except ConfigError as exc:
            log.warning("model %s not loaded: %s", entry.name, exc)
            return ServedModel(entry.name, None, error=str(exc))
        policy = VersionPolicy.of(config)
        available = sorted(entry.versions)
        versions: dict[int, ModelVersion] = {}
        failures: dict[int, str] = {
            v: "named by [model] versions but not in the repository"
            for v in policy.missing(available)
        }
        for number in policy.select(available):
            try:
                versions[number] = self._load_version(entry, number, config)
            except ConfigError as exc:
                failures[number] = str(exc)
                log.warning("model %s version %d failed to load: %s", entry.name, number, exc)
                self._observe(entry.name, number, "failed")
            else:
                self._observe(entry.name, number, "success")
        error = None if available else "no version directories with a model.onnx"
        return ServedModel(
            entry.name,
            config,
            MappingProxyType(versions),
            MappingProxyType(failures),
            error,
        )

    def _load_version(self, entry: ModelDir, number: int, config: ModelConfig) -> ModelVersion:
        path = entry.versions[number]
        model = OnnxModel(path, config.runtime)
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

    def _observe(self, model: str, version: int, outcome: str) -> None:
        if self._observer is not None:
            self._observer.model_loaded(model, version, outcome)


def _parse_version(model: str, version: str) -> int:
    if version.isascii() and version.isdigit() and not version.startswith("0"):
        return int(version)
    raise ModelNotFound(
        f"model '{model}' has no version '{version[:40]}'; versions are positive integers"
    )


def _why(served: ServedModel) -> str:
    if served.error:
        return served.error
    reasons = [f"version {v}: {why}" for v, why in sorted(served.failures.items())]
    return "; ".join(reasons) or "no version matches its [model] versions policy"
