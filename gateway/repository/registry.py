"""ModelRegistry: which model versions are loaded and serving, and changing that safely.

The whole serving state is one immutable ``RepositoryState`` held in one
attribute. Readers take the reference once per request; a change builds a new
state off to the side (loaded and warmed up) and replaces the reference in a
single assignment, so a request sees either the old state or the new one, never
a mix. Versions the new state no longer serves are then retired: they finish
what was already sent to them, and only then release their sessions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

from gateway.errors import InvalidRequest, ModelNotFound
from gateway.repository.layout import ModelDir, RepositoryScan, is_valid_model_name, scan_repository
from gateway.repository.loader import FeatureWiring, ModelLoader, RegistryObserver
from gateway.repository.served import ServedModel, parse_version
from gateway.repository.version import ModelVersion, version_summary
from gateway.routing.plan import RoutePlan

log = logging.getLogger("gateway.repository")

__all__ = ["ModelRegistry", "RegistryObserver", "RepositoryState", "ServedModel"]


@dataclass(frozen=True, slots=True)
class RepositoryState:
    models: Mapping[str, ServedModel]
    skipped: tuple[str, ...] = ()
    loaded: bool = True

    @property
    def ready(self) -> bool:
        """Loaded, and some model can answer."""
        return self.loaded and any(m.ready for m in self.models.values())

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
    """Loads the repository, keeps it in step with the disk, and looks models up (which
    of their versions takes a request is routing.router's choice)."""

    def __init__(
        self,
        root: Path,
        observer: RegistryObserver | None = None,
        drain_timeout_s: float = 30.0,
        features: FeatureWiring | None = None,
    ) -> None:
        """``features``: what gives models with [features] their lookups (without it,
        such a model does not load)."""
        self.root = root
        self.state: RepositoryState = _EMPTY
        self._observer = observer
        self._loader = ModelLoader(observer, features)
        self._drain_timeout_s = drain_timeout_s
        # loading is slow and runs off the event loop, one model at a time
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        self._changing = asyncio.Lock()
        self._sightings: dict[str, object] = {}  # the stamp each model had at the last poll
        self._retiring: set[asyncio.Task[None]] = set()
        self._overrides: dict[str, RoutePlan] = {}  # routing set at run time, by model

    async def __aenter__(self) -> ModelRegistry:
        await self.load()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Let every version finish its queued and running requests, then release it all."""
        models = list(self.state.models.values())
        versions = [v for m in models for v in m.versions.values()]
        self._publish(_EMPTY)
        await asyncio.gather(*self._retiring, *(v.aclose() for v in versions))
        await asyncio.gather(*(m.features.aclose() for m in models if m.features is not None))
        self._thread.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Release everything at once, without waiting for queued requests (see aclose)."""
        for model in self.state.models.values():
            for version in model.versions.values():
                version.release()
        self._publish(_EMPTY)
        self._thread.shutdown(wait=False, cancel_futures=True)

    # -- changing what serves --------------------------------------------------------

    def _publish(self, state: RepositoryState) -> None:
        self.state = state
        if self._observer is not None:
            self._observer.serving(
                (v.info.model, v.info.version, v.info.sha256)
                for m in state.models.values()
                for v in m.versions.values()
            )

    async def load(self) -> RepositoryState:
        """Scan and load the whole repository, then make it the serving state."""
        async with self._changing:
            scan = await self._scan()
            await self._apply(scan, list(scan.models.values()), [])
            return self.state

    async def refresh(self) -> list[str]:
        """One poll: apply what changed on disk and has stayed the same since the last
        poll (so a file still being written is not loaded). Returns the changed models."""
        async with self._changing:
            scan = await self._scan()
            current = self.state.models
            changed: list[ModelDir] = []
            for name, entry in scan.models.items():
                served = current.get(name)
                if served is not None and served.unloaded:
                    continue
                stamp = entry.stamp()
                if served is not None and served.stamp == stamp:
                    self._sightings.pop(name, None)
                    continue
                if self._sightings.get(name) != stamp:
                    self._sightings[name] = stamp  # seen changing: look again next poll
                    continue
                changed.append(entry)
            removed = [n for n in current if n not in scan.models and not current[n].unloaded]
            if changed or removed:
                await self._apply(scan, changed, removed)
            return [e.name for e in changed] + removed

    async def load_model(self, name: str) -> ServedModel:
        """(Re)load one model from disk now, also one that was unloaded."""
        async with self._changing:
            scan = await self._scan()
            entry = scan.models.get(name)
            if entry is None:
                raise ModelNotFound(self._not_on_disk(name, scan))
            previous = self.state.models.get(name)
            if previous is not None and previous.unloaded:
                previous = None
            await self._apply(scan, [entry], [], force={name: previous})
            return self.state.models[name]

    async def unload_model(self, name: str) -> None:
        """Stop serving a model; its versions finish what they were sent, then are released."""
        async with self._changing:
            served = self.model(name)
            if served.unloaded:
                return
            reason = _unloaded(name)
            stopped = ServedModel(
                name,
                None,
                failures=MappingProxyType({v: reason for v in served.present}),
                error=reason,
                unloaded=True,
                present=served.present,
            )
            models = dict(self.state.models)
            models[name] = stopped
            self._publish(replace(self.state, models=MappingProxyType(models)))
            self._retire(list(served.versions.values()))

    def check_routing(self, name: str, plan: RoutePlan) -> RoutePlan:
        """``plan`` ready to apply to the model as it serves now; InvalidRequest saying
        what is wrong otherwise. An unloaded model's plan is checked when it loads."""
        served = self.model(name)
        if served.unloaded:
            return plan
        checked, problems = plan.validate(served.versions, served.caller_inputs)
        if problems:
            raise InvalidRequest(
                f"routing for model '{name}' not applied: {'; '.join(problems)} "
                f"(loaded versions: {version_summary(served.versions)})"
            )
        return checked

    async def set_routing(self, name: str, plan: RoutePlan | None) -> ServedModel:
        """Override model.toml's routing at run time (None: back to model.toml's),
        atomically. The override outlives reloads of the model while its versions
        allow it; an unloaded model takes it when it loads again."""
        async with self._changing:
            served = self.model(name)
            if plan is None:
                self._overrides.pop(name, None)
                changed = replace(served, routing=served.file_routing)
            else:
                checked = self.check_routing(name, plan)
                self._overrides[name] = checked
                changed = served if served.unloaded else _routed(served, checked)
            self._publish(
                replace(self.state, models=MappingProxyType({**self.state.models, name: changed}))
            )
            return changed

    async def _scan(self) -> RepositoryScan:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, scan_repository, self.root)

    async def _apply(
        self,
        scan: RepositoryScan,
        entries: list[ModelDir],
        removed: list[str],
        force: Mapping[str, ServedModel | None] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        models = dict(self.state.models)
        retired: list[ModelVersion] = []
        for entry in entries:
            previous = (
                force[entry.name] if force and entry.name in force else models.get(entry.name)
            )
            try:
                served, replaced = await loop.run_in_executor(
                    self._thread, self._loader.build, entry, previous
                )
            except Exception as exc:  # nothing in a repository may stop the others loading
                log.exception("model %s could not be loaded", entry.name)
                if self._observer is not None:
                    self._observer.model_loaded(entry.name, None, "failed")
                reason = f"could not be loaded: {type(exc).__name__}: {exc}"
                if previous is not None and previous.versions:
                    served = replace(previous, error=reason, stamp=entry.stamp())
                else:
                    served = ServedModel(entry.name, None, error=reason, stamp=entry.stamp())
                replaced = []
            for version in served.versions.values():
                version.start()
            models[entry.name] = self._overridden(served)
            retired += replaced
            self._sightings.pop(entry.name, None)
        for name in removed:
            retired += models.pop(name).versions.values()
            log.info("model %s left the repository; unloading it", name)
        for problem in scan.skipped:
            log.warning("skipped %s", problem)
        self._publish(RepositoryState(MappingProxyType(models), tuple(scan.skipped)))
        self._retire(retired)

    def _overridden(self, served: ServedModel) -> ServedModel:
        """A model just (re)built, with its runtime routing if it has one that its
        versions allow (else model.toml's serves, and the log says why)."""
        plan = self._overrides.get(served.name)
        if plan is None or not served.versions:
            return served
        checked, problems = plan.validate(served.versions, served.caller_inputs)
        if problems:
            log.warning(
                "model %s: its runtime routing does not apply to the versions now loaded "
                "(%s); the routing of its model.toml serves",
                served.name,
                "; ".join(problems),
            )
            return served
        return _routed(served, checked)

    def _retire(self, versions: list[ModelVersion]) -> None:
        for version in versions:
            log.info("retiring model %s version %d", version.info.model, version.info.version)
            task = asyncio.get_running_loop().create_task(
                version.retire(self._drain_timeout_s), name=f"retire {version.info.model}"
            )
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    # -- answering requests ----------------------------------------------------------

    def resolve(self, model: str, version: str | None) -> ModelVersion:
        """The version named (``version``: its path segment), else the model's default;
        404 or 503 saying why not. Routing is not applied (see routing.router.route)."""
        served = self.model(model)
        return served.version(None if version is None else parse_version(model, version))

    def model(self, name: str) -> ServedModel:
        served = self.state.models.get(name)
        if served is None:
            if not is_valid_model_name(name):
                raise ModelNotFound(_invalid_name(name))
            known = ", ".join(sorted(self.state.models)) or "none"
            raise ModelNotFound(f"unknown model '{name}'; models in the repository: {known}")
        return served

    def index(self) -> list[dict[str, str]]:
        """Triton's repository index: every model and version with its state and reason."""
        rows: list[dict[str, str]] = []
        for name in sorted(self.state.models):
            served = self.state.models[name]
            numbers = sorted(set(served.versions) | set(served.failures))
            if not numbers:
                reason = served.error or "no version matches its [model] versions policy"
                rows.append({"name": name, "state": "UNAVAILABLE", "reason": reason})
            for number in numbers:
                state = "READY" if number in served.versions else "UNAVAILABLE"
                reason = served.failures.get(number, "")
                if state == "READY" and served.error:
                    reason = served.error
                elif state == "READY":  # serving, but perhaps without drift monitoring
                    reason = served.versions[number].drift_problem or ""
                rows.append(
                    {"name": name, "version": str(number), "state": state, "reason": reason}
                )
        return rows

    def on_disk(self, name: str) -> None:
        """ModelNotFound unless the repository has a directory for model ``name``."""
        if not is_valid_model_name(name) or not (self.root / name).is_dir():
            known = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            raise ModelNotFound(self._not_on_disk(name, known))

    def _not_on_disk(self, name: str, scan: RepositoryScan | list[str]) -> str:
        if not is_valid_model_name(name):
            return _invalid_name(name)
        names = scan if isinstance(scan, list) else sorted(scan.models)
        known = ", ".join(names) or "none"
        return f"no model '{name}' in the repository {self.root}; models there: {known}"


def _routed(served: ServedModel, plan: RoutePlan) -> ServedModel:
    return replace(served, routing=plan if plan.active else None)


def _invalid_name(name: str) -> str:
    return (
        f"'{name[:140]}' is not a valid model name "
        "(expected 1-128 characters of A-Z, a-z, 0-9, '_', '.', '-', and not '.' or '..')"
    )


def _unloaded(name: str) -> str:
    return (
        f"model '{name}' is unloaded (through POST /v2/repository/models/{name}/unload); "
        f"load it with POST /v2/repository/models/{name}/load"
    )
