"""FeatureWiring: gives each model with ``[features]`` its lookup, on the right store.

The repository keeps a model's lookup with the model (so versions and features swap
together) but does not build it: the loader asks this wiring, once before it loads
a model's versions (``prepare``: is there a store? this is where a model without one
fails) and once after its new state is accepted (build the lookup, or keep the warm
one when neither [features] nor the model's own features file changed).

Which store a model reads its entities from, in order: the gateway's shared store
(Redis from ``--redis-url``, else the in-process store filled from
``--features-file``); else the model's own ``[features] file``, a CSV or JSONL file
in its directory read into an in-process store of its own; else none, and the
model does not load (``no_store_message`` says how to give it one) rather than
silently answering every entity id with the defaults.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from gateway.errors import ConfigError
from gateway.features.lookup import FeatureLookup, FeatureObserver
from gateway.features.section import FeaturesSection
from gateway.features.stores import FeatureStore, MemoryStore
from gateway.repository.layout import ModelDir

log = logging.getLogger("gateway.repository")


class FeatureObservers(Protocol):
    def feature_observer(self, model: str) -> FeatureObserver: ...


Stamp = tuple[int, int] | None


def no_store_message(model: str, section: FeaturesSection) -> str:
    return (
        f"model '{model}' has [features] (it looks '{section.entity_input}' ids up under "
        f"key '{section.key}') but the gateway has no feature store for it: start it with "
        "--redis-url URL (GATEWAY_REDIS_URL) to read the features from Redis, or with "
        "--features-file FILE (GATEWAY_FEATURES_FILE) to read them from a CSV or JSONL file; "
        "or name such a file in the model's own directory with "
        '[features] file = "entities.csv" in its model.toml'
    )


class FeatureWiring:
    """``shared``: the gateway's store, if it has one. ``required``: whether a model with
    [features] and no store at all fails to load (``gateway serve``), or gets an empty
    in-process store (``gateway models check``, which serves nothing). ``observers``:
    where each lookup counts its rows, fetches and cache size (the metrics)."""

    def __init__(
        self,
        shared: FeatureStore | None = None,
        required: bool = False,
        observers: FeatureObservers | None = None,
    ) -> None:
        self.shared = shared
        self.required = required
        self._observers = observers
        # per model: the lookup built last and the stamp of the file it was built from
        self._built: dict[str, tuple[FeatureLookup, Stamp]] = {}

    def prepare(
        self, entry: ModelDir, section: FeaturesSection, previous: FeatureLookup | None
    ) -> Callable[[], FeatureLookup]:
        """Check that the model can have a lookup (raises ConfigError saying what to do
        when it has no store, or its file cannot be read); the callable gives it, once
        the model's new state applies: ``previous`` (with its warm cache) when its
        [features] and features file are unchanged, else a new one. Blocks (it may read
        the file): run off the event loop."""
        stamp = self._stamp(entry, section)
        built = self._built.get(entry.name)
        if built is not None and built[0] is previous and built[1] == stamp:
            kept = built[0]
            if kept.config == section:
                return lambda: kept
        store = self._store(entry, section)

        def build() -> FeatureLookup:
            observer = self._observers.feature_observer(entry.name) if self._observers else None
            lookup = FeatureLookup(entry.name, section, store, time.monotonic, observer)
            self._built[entry.name] = (lookup, stamp)
            return lookup

        return build

    def _stamp(self, entry: ModelDir, section: FeaturesSection) -> Stamp:
        """What the model's own file looks like on disk (None when it has none, or the
        shared store serves it): a lookup is rebuilt when this changes."""
        if self.shared is not None or section.file is None:
            return None
        try:
            info = (entry.path / section.file).stat()
        except OSError:
            return None
        return (info.st_size, info.st_mtime_ns)

    def _store(self, entry: ModelDir, section: FeaturesSection) -> FeatureStore:
        """The model's store, its entities indexed by the model's key."""
        store: FeatureStore
        if self.shared is not None:
            store = self.shared
        elif section.file is not None:
            store = self._from_file(entry, section.file)
        elif self.required:
            raise ConfigError(no_store_message(entry.name, section))
        else:
            store = MemoryStore()
        if isinstance(store, MemoryStore):
            store.index(section.key, section.entity_input)
        return store

    def _from_file(self, entry: ModelDir, name: str) -> MemoryStore:
        path = entry.path / name
        where = f'{entry.config_path}: [features] file = "{name}"'
        try:
            home, real = entry.path.resolve(), path.resolve()
        except (OSError, RuntimeError):  # a symlink loop
            raise ConfigError(f"{where}: a symlink that cannot be resolved") from None
        if not real.is_relative_to(home):
            raise ConfigError(
                f"{where} resolves to {real}, outside the model's directory {home}; "
                "the file must be inside it"
            )
        if not path.is_file():
            raise ConfigError(
                f"{where}: expected a CSV or JSONL file of entities at {path}, found "
                + ("a directory" if path.is_dir() else "nothing")
            )
        try:
            store = MemoryStore.from_file(path)
        except OSError as exc:
            raise ConfigError(f"{where}: cannot be read: {exc.strerror}") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ConfigError(f"{where}: not a UTF-8 CSV or JSONL file: {exc}") from None
        log.info("model %s: features from its own file %s", entry.name, path)
        return store


def open_store(
    redis_url: str | None,
    features_file: Path | None,
    now: Callable[[], float],
    on_error: Callable[[], None] | None = None,
) -> FeatureStore:
    """The gateway's shared store: Redis when a URL is given; otherwise memory, filled
    from the file if there is one."""
    if redis_url is not None:
        # imported only with a Redis: a gateway without one never loads redis-py
        from gateway.features.redis_store import RedisStore

        return RedisStore.from_url(redis_url, now, on_error)
    if features_file is not None:
        return MemoryStore.from_file(features_file)
    return MemoryStore()


def describe_source(redis_url: str | None, features_file: Path | None) -> str:
    """Where models' features come from, for the startup log."""
    if redis_url is not None:
        ignored = f" (--features-file {features_file} ignored)" if features_file else ""
        return f"features from Redis (--redis-url){ignored}"
    if features_file is not None:
        return f"features from {features_file} (--features-file), in process"
    return (
        "no --redis-url or --features-file: a model with [features] reads the file its "
        "[features] file names, and without one it does not load"
    )
