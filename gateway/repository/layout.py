"""Scan a model repository.

Layout: ``<root>/<model>/[model.toml]`` and ``<root>/<model>/<version>/model.onnx``.

Pure filesystem reading, no onnxruntime: the result says what could be loaded
and what is wrong, and the registry decides what to do with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_VERSION_DIR = re.compile(r"^[1-9][0-9]{0,17}$")
MODEL_FILE = "model.onnx"
CONFIG_FILE = "model.toml"


def is_valid_model_name(name: str) -> bool:
    return bool(MODEL_NAME.match(name)) and name not in (".", "..")


@dataclass(slots=True)
class ModelDir:
    """One model's directory: its config file and the version directories holding a model."""

    name: str
    path: Path
    versions: dict[int, Path] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    def stamp(self) -> tuple[object, ...]:
        """What the model looks like on disk: sizes and modification times of its
        config and model files. Equal stamps one poll apart mean the files are settled."""
        return (_file_stamp(self.config_path),) + tuple(
            (number, _file_stamp(path)) for number, path in sorted(self.versions.items())
        )

    def version_stamp(self, number: int) -> tuple[int, int] | None:
        return _file_stamp(self.versions[number])


def _file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns)


@dataclass(slots=True)
class RepositoryScan:
    models: dict[str, ModelDir]
    skipped: list[str]  # entries that are not models, with the reason


def scan_repository(root: Path) -> RepositoryScan:
    if not root.is_dir():
        raise FileNotFoundError(f"model repository {root} is not a directory")
    models: dict[str, ModelDir] = {}
    skipped: list[str] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if not is_valid_model_name(entry.name):
            skipped.append(f"{entry}: model names must match {MODEL_NAME.pattern}")
            continue
        model = ModelDir(entry.name, entry)
        for child in entry.iterdir():
            if child.is_dir() and _VERSION_DIR.match(child.name):
                if (child / MODEL_FILE).is_file():
                    model.versions[int(child.name)] = child / MODEL_FILE
                else:
                    skipped.append(f"{child}: no {MODEL_FILE} in this version directory")
        models[entry.name] = model
    return RepositoryScan(models, skipped)
