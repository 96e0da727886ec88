"""Which feature store a model with ``[features]`` reads its entities from.

In order: the gateway's shared store (Redis from ``--redis-url``, else the in-process
store filled from ``--features-file``); else the model's own ``[features] file``, a CSV
or JSONL file in its directory read into an in-process store of its own; else none,
and the model does not load (``NoFeatureStore`` says how to give it one) rather than
silently answering every entity id with the defaults.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from gateway.errors import ConfigError
from gateway.features.section import FeaturesSection
from gateway.features.store import FeatureStore, MemoryStore
from gateway.repository.layout import ModelDir

log = logging.getLogger("gateway.repository")

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


class FeatureStores:
    """``shared``: the gateway's store, if it has one. ``required``: whether a model with
    [features] and no store at all fails to load (``gateway serve``), or gets an empty
    in-process store (``gateway models check``, which serves nothing)."""

    def __init__(self, shared: FeatureStore | None = None, required: bool = False) -> None:
        self.shared = shared
        self.required = required

    def stamp(self, entry: ModelDir, section: FeaturesSection) -> Stamp:
        """What the model's own file looks like on disk (None when it has none, or the
        shared store serves it): a lookup is rebuilt when this changes."""
        if self.shared is not None or section.file is None:
            return None
        try:
            info = (entry.path / section.file).stat()
        except OSError:
            return None
        return (info.st_size, info.st_mtime_ns)

    def for_model(self, entry: ModelDir, section: FeaturesSection) -> FeatureStore:
        """The model's store, its entities indexed by the model's key; raises ConfigError
        saying what to do when there is none or its file cannot be read. Blocks (reads
        the file): run off the event loop."""
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
