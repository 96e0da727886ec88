"""Scan a model repository.

Layout: ``<root>/<model>/[model.toml]`` and ``<root>/<model>/<version>/model.onnx``.

Pure filesystem reading, no onnxruntime: the result says what could be loaded
and what is wrong, and the registry decides what to do with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# \A and \Z, not ^ and $: "$" also matches before a trailing newline
MODEL_NAME = re.compile(r"\A[A-Za-z0-9_.-]{1,128}\Z")
_VERSION_DIR = re.compile(r"\A[1-9][0-9]{0,17}\Z")
MODEL_FILE = "model.onnx"
CONFIG_FILE = "model.toml"


def is_valid_model_name(name: str) -> bool:
    return bool(MODEL_NAME.match(name)) and name not in (".", "..")


@dataclass(slots=True)
class ModelDir:
    """One model's directory: its config file and the version directories holding a model.

    ``problem``: why the model as a whole cannot load (its directory is a symlink out
    of the repository, or cannot be read). ``refused``: version directories found but
    not to be loaded, with the reason (a symlink out of the repository).
    ``config_problem``: why model.toml is not read."""

    name: str
    path: Path
    versions: dict[int, Path] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    problem: str | None = None
    config_problem: str | None = None

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def numbers(self) -> list[int]:
        """Every version directory found, loadable or refused."""
        return sorted(set(self.versions) | set(self.refused))

    def stamp(self) -> tuple[object, ...]:
        """What the model looks like on disk: sizes and modification times of its
        config and model files. Equal stamps one poll apart mean the files are settled."""
        return (
            (self.problem, self.config_problem, _file_stamp(self.config_path)),
            *((number, _file_stamp(path)) for number, path in sorted(self.versions.items())),
            *sorted(self.refused.items()),
        )

    def version_stamp(self, number: int) -> tuple[int, int] | None:
        path = self.versions.get(number)
        return None if path is None else _file_stamp(path)


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
    home = _real(root) or root
    models: dict[str, ModelDir] = {}
    skipped: list[str] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if not is_valid_model_name(entry.name):
            skipped.append(f"{entry}: model names must match {MODEL_NAME.pattern}")
            continue
        model = ModelDir(entry.name, entry)
        models[entry.name] = model
        model.problem = escapes(home, entry)
        if model.problem is None:
            _scan_model(home, model, skipped)
    return RepositoryScan(models, skipped)


def _scan_model(home: Path, model: ModelDir, skipped: list[str]) -> None:
    try:
        children = sorted(model.path.iterdir())
    except OSError as exc:
        model.problem = f"{model.path}: cannot be read: {exc.strerror}"
        return
    if model.config_path.is_symlink():
        model.config_problem = escapes(home, model.config_path)
    for child in children:
        if not (_VERSION_DIR.match(child.name) and child.is_dir()):
            continue
        number = int(child.name)
        refused = escapes(home, child) or escapes(home, child / MODEL_FILE)
        if refused is not None:
            model.refused[number] = refused
        elif (child / MODEL_FILE).is_file():
            model.versions[number] = child / MODEL_FILE
        else:
            skipped.append(f"{child}: no {MODEL_FILE} in this version directory")


def escapes(home: Path, path: Path) -> str | None:
    """Why ``path`` must not be opened: it is (or passes through) a symlink that
    resolves outside the repository ``home`` (already resolved). None when it is fine
    (also when it does not exist)."""
    if not path.is_symlink() and path.parent == home:
        return None  # the common case: a plain entry right in the repository
    real = _real(path)
    if real is None:
        return f"{path}: a symlink that cannot be resolved (a loop?); not followed"
    if real == home or real.is_relative_to(home):
        return None
    return (
        f"{path}: a symlink to {real}, outside the model repository {home}; not followed "
        "(symlinks must stay inside the repository)"
    )


def _real(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None
