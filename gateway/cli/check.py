"""``gateway models check``: load a repository the way the server would and report on it."""

from __future__ import annotations

from pathlib import Path

from gateway.protocol.signature import TensorSpec, format_shape
from gateway.repository.registry import ModelRegistry, ServedModel
from gateway.service.feature_wiring import FeatureWiring


async def check_repository(root: Path) -> tuple[str, bool]:
    """A readable report, and whether every model and every selected version loaded."""
    # a model with [features] and no store of its own is checked on an empty one
    registry = ModelRegistry(root, features=FeatureWiring())
    try:
        state = await registry.load()
        lines = [f"repository {root}"]
        for served in state.models.values():
            lines.extend(_describe(served))
        bad = sorted(m.name for m in state.models.values() if m.error or m.failures or not m.ready)
        for skipped in state.skipped:
            lines.append(f"skipped: {skipped}")
        if not state.models:
            lines.append("no models found")
        if bad or state.skipped or not state.models:
            lines.append("PROBLEMS: " + (", ".join(bad) or "see skipped entries above"))
            return "\n".join(lines), False
        lines.append(f"OK: {len(state.models)} model(s)")
        return "\n".join(lines), True
    finally:
        await registry.aclose()


def _describe(served: ServedModel) -> list[str]:
    lines = ["", f"model {served.name}"]
    if served.error:
        lines.append(f"  ERROR: {served.error}")
    if served.config is not None:
        for section, values in served.config.model_dump().items():
            if values is None:
                continue  # an optional section the model does not use
            rendered = ", ".join(f"{k} = {v!r}" for k, v in values.items())
            lines.append(f"  [{section}] {rendered}")
    for number, version in sorted(served.versions.items()):
        info = version.info
        lines.append(f"  version {number}: ready on {', '.join(info.providers)}")
        lines.append(f"    sha256 {info.sha256}")
        lines.extend(f"    input  {_spec(s)}" for s in version.signature.inputs)
        lines.extend(f"    output {_spec(s)}" for s in version.signature.outputs)
    for number, reason in sorted(served.failures.items()):
        lines.append(f"  version {number}: FAILED: {reason}")
    return lines


def _spec(spec: TensorSpec) -> str:
    return f"{spec.name}: {spec.datatype} {format_shape(spec.shape)}"
