"""ServedModel: one model as it serves, and which of its versions answers a request.

Immutable: a change to a model builds a new one (``loader``) and the registry swaps
it in whole, so the versions, routing and features a request sees always agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.errors import ModelNotFound, ModelNotReady
from gateway.features.lookup import FeatureLookup
from gateway.repository.spec import ModelConfig
from gateway.repository.version import ModelVersion, version_summary
from gateway.routing.plan import RoutePlan


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
    file_routing: RoutePlan | None = None  # model.toml's, which a runtime change overrides
    features: FeatureLookup | None = None  # [features]: the caller may send entity ids
    present: tuple[int, ...] = ()  # the version directories on disk when this was built

    # worked out once, read on every request: without routing, traffic goes to the
    # highest ready version; a sticky key among ``caller_inputs`` is read from the body
    default: ModelVersion | None = field(init=False, default=None, compare=False)
    caller_inputs: frozenset[str] = field(init=False, default=frozenset(), compare=False)

    def __post_init__(self) -> None:
        highest = self.versions[max(self.versions)] if self.versions else None
        object.__setattr__(self, "default", highest)
        names = set(highest.signature.input_names) if highest is not None else set()
        if self.features is not None:
            names.add(self.features.entity_input)
        object.__setattr__(self, "caller_inputs", frozenset(names))

    @property
    def ready(self) -> bool:
        return bool(self.versions)

    @property
    def labels(self) -> list[str]:
        """The loaded versions, in order, as answers list them (``["1", "2"]``)."""
        return [str(number) for number in sorted(self.versions)]

    def version(self, number: int | None) -> ModelVersion:
        """Version ``number``, or (None) the default one; 404 or 503 saying why not."""
        if number is None:
            chosen = self.default
            if chosen is None:
                raise ModelNotReady(
                    self.error
                    if self.unloaded and self.error
                    else f"model '{self.name}' has no loaded version: {self.why_not_ready()}"
                )
            return chosen
        ready = self.versions.get(number)
        if ready is not None:
            return ready
        raise self._not_serving(number)

    def why_not_ready(self) -> str:
        if self.error:
            return self.error
        reasons = [f"version {v}: {why}" for v, why in sorted(self.failures.items())]
        return "; ".join(reasons) or "no version matches its [model] versions policy"

    def _not_serving(self, number: int) -> ModelNotFound | ModelNotReady:
        """Why an explicit version does not serve: 503 for one that is in the repository
        but not ready (failed, or its model is unloaded or broken), 404 for one that is not."""
        model = self.name
        if number in self.failures:
            return ModelNotReady(
                f"version {number} of model '{model}' is not ready: {self.failures[number]}"
            )
        if number in self.present and not self.versions:
            return ModelNotReady(
                f"version {number} of model '{model}' is not ready: {self.why_not_ready()}"
            )
        loaded = version_summary(self.versions)
        if number in self.present:
            return ModelNotFound(
                f"model '{model}' has no version {number} loaded: its [model] versions policy "
                f"does not select it (loaded versions: {loaded}); name it in [model] versions "
                "in model.toml to serve it"
            )
        return ModelNotFound(
            f"model '{model}' has no version {number}; loaded versions: {loaded} "
            f"(versions in the repository: {version_summary(self.present)})"
        )


def parse_version(model: str, version: str) -> int:
    """A version path segment: 1-18 ASCII digits, no leading zero (else 404, SPEC 10)."""
    if len(version) <= 18 and version.isascii() and version.isdigit() and version[0] != "0":
        return int(version)
    raise ModelNotFound(
        f"model '{model}' has no version '{version[:40]}'; versions are positive integers "
        "of at most 18 digits"
    )
