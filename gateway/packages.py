"""Which onnxruntime distributions are installed: onnxruntime (CPU) and onnxruntime-gpu
(the ``gpu`` extra) both install the same ``onnxruntime`` module, so with both in one
environment the files of whichever was installed last win, partly, and removing either
breaks the other. Read from package metadata only (onnxruntime is not imported)."""

from __future__ import annotations

import logging
from importlib import metadata

log = logging.getLogger("gateway.runtime")

RUNTIMES = ("onnxruntime", "onnxruntime-gpu")
KEEP_GPU = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'onnxruntime-gpu>=1.17'"
KEEP_CPU = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'onnxruntime>=1.17'"


def installed_runtimes() -> dict[str, str]:
    """Each onnxruntime distribution installed here, with its version."""
    found: dict[str, str] = {}
    for name in RUNTIMES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def runtime_clash(installed: dict[str, str]) -> str | None:
    """What to do when more than one onnxruntime distribution is installed (else None)."""
    if len(installed) < 2:
        return None
    both = " and ".join(f"{name} {version}" for name, version in installed.items())
    return (
        f"{both} are both installed; they share the onnxruntime module, so which one runs "
        f"depends on the order they were installed in. Keep one: for CUDA `{KEEP_GPU}`, "
        f"for CPU only `{KEEP_CPU}`"
    )


def warn_about_runtime_clash() -> None:
    message = runtime_clash(installed_runtimes())
    if message is not None:
        log.warning(message)


def onnxruntime_version() -> str:
    """The installed onnxruntime's version (either distribution), or "unknown"."""
    for distribution in RUNTIMES:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"
