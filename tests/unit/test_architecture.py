"""Import rules and size limits that keep the layers apart (see STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "gateway"
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _where(library: str) -> set[str]:
    return {str(path.relative_to(PACKAGE)) for path in _modules() if library in _imports(path)}


def test_onnxruntime_only_in_the_session_module() -> None:
    assert _where("onnxruntime") == {"repository/session.py"}


def test_starlette_only_in_the_http_layer_and_app() -> None:
    assert all(p.startswith("http/") or p == "app.py" for p in _where("starlette"))


def test_prometheus_only_in_metrics() -> None:
    assert _where("prometheus_client") == {"metrics.py", "tallies.py"}


def test_environment_read_only_by_config() -> None:
    readers = {
        str(p.relative_to(PACKAGE))
        for p in _modules()
        if "os.environ" in p.read_text() or "os.getenv" in p.read_text()
    }
    # server.py writes the settings into the environment for worker processes; only config reads
    assert readers <= {"config.py", "server.py"}
    assert "os.environ[" not in (PACKAGE / "server.py").read_text()
    assert "os.getenv" not in (PACKAGE / "server.py").read_text()


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_no_wall_clock_for_durations() -> None:
    offenders = [str(p) for p in _modules() if "time.time()" in p.read_text()]
    assert offenders == []
