"""Import rules and size limits that keep the layers apart (see STYLE.md).

Our own packages depend one way, outermost first::

    __main__ -> cli -> server -> app -> http -> service
        -> repository -> routing, features -> batching, protocol -> errors, config

``ALLOWED`` says which of our packages and top-level modules each one may import.
Every import of ``gateway.*`` counts: at the top of a module, inside a function, under
``if TYPE_CHECKING``, relative or absolute. Any import the table does not allow fails,
as does any cycle between packages or between modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Set
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "gateway"
MAX_LINES = 400

# imported by anyone: the version string (gateway/__init__.py), the errors every layer
# raises, the settings, pydantic error wording and the log setup
SHARED = frozenset({"gateway", "errors", "config", "validation", "logs"})

# package or top-level module -> the packages and top-level modules of ours it may import
ALLOWED: Mapping[str, Set[str]] = {
    "gateway": set(),
    "errors": set(),
    "config": set(),
    "validation": set(),
    "logs": set(),
    "tallies": set(),
    "packages": set(),
    "redis_client": set(),
    "processes": set(),
    "drift_metrics": set(),
    "rollout_metrics": set(),
    "payload_metrics": set(),
    "metrics": {"tallies", "drift_metrics", "packages"} | SHARED,
    "workers": {"metrics", "processes"} | SHARED,
    "protocol": SHARED,
    "batching": SHARED,
    "routing": SHARED,
    "features": {"protocol", "redis_client"} | SHARED,
    "control": {"redis_client", "processes"} | SHARED,
    "monitoring": {"protocol"} | SHARED,
    "rollout": SHARED,
    "payload": {"protocol"} | SHARED,
    "repository": {"routing", "features", "monitoring", "batching", "protocol", "packages"}
    | SHARED,
    "service": {
        "control",
        "repository",
        "routing",
        "features",
        "monitoring",
        "processes",
        "rollout",
        "rollout_metrics",
        "payload",
        "batching",
        "protocol",
        "metrics",
    }
    | SHARED,
    "http": {"service", "protocol", "metrics"} | SHARED - {"validation"},
    # gRPC: a second transport over the same service call, with HTTP's messages and ids
    "rpc": {"service", "protocol", "http"} | SHARED - {"validation"},
    "app": {
        "rpc",
        "control",
        "rollout_metrics",
        "payload",
        "payload_metrics",
        "http",
        "service",
        "repository",
        "routing",
        "features",
        "batching",
        "protocol",
        "metrics",
        "workers",
        "tallies",
        "packages",
    }
    | SHARED,
    "server": {"app", "http", "protocol", "metrics", "workers"} | SHARED,
    "cli": {
        "server",
        "service",
        "repository",
        "features",
        "monitoring",
        "payload",
        "protocol",
        "packages",
    }
    | SHARED,
    "__main__": {"cli"},
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    """gateway/http/admin.py -> gateway.http.admin; gateway/http/__init__.py -> gateway.http"""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(path): path for path in _modules()}


# the repository keeps each model's routing plan and feature lookup with its versions, so
# that all three swap together; of those packages it may import only what it holds
NARROW: Mapping[tuple[str, str], Set[str]] = {
    ("repository", "routing"): {"gateway.routing.section", "gateway.routing.plan"},
    ("repository", "features"): {"gateway.features.section", "gateway.features.lookup"},
}


def _unit(module: str) -> str:
    """The package or top-level module a module belongs to: gateway.http.admin -> http,
    gateway.app -> app, gateway (its __init__) -> gateway."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _ours(source: str, module: str, is_package: bool) -> Iterator[str]:
    """Every module of ours that ``source`` (the text of ``module``) imports, anywhere in
    it: relative imports resolved, ``from x import y`` is x.y when that is a module."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        yield from (t for t in targets if t == "gateway" or t.startswith("gateway."))


def _graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports."""
    return {
        name: set(_ours(path.read_text(), name, path.name == "__init__.py"))
        for name, path in MODULES.items()
    }


def _cycles(graph: Mapping[str, Set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_parser_sees_every_kind_of_import() -> None:
    source = (
        "import gateway.errors\n"
        "from . import signature\n"
        "from ..batching.ticket import Ticket\n"
        "if TYPE_CHECKING:\n"
        "    from gateway.metrics import Metrics\n"
        "def f() -> None:\n"
        "    from gateway import __version__\n"
        "import numpy\n"
    )
    found = set(_ours(source, "gateway.protocol.v2", is_package=False))
    assert found == {
        "gateway.errors",
        "gateway.protocol.signature",
        "gateway.batching.ticket",
        "gateway.metrics",
        "gateway",
    }


def test_every_package_and_module_has_a_row() -> None:
    units = {_unit(name) for name in MODULES}
    assert units - set(ALLOWED) == set()
    assert set(ALLOWED) - units == set()  # a row for something gone is stale


def test_the_table_itself_has_no_cycle() -> None:
    assert _cycles({unit: set(targets) for unit, targets in ALLOWED.items()}) == []


def test_packages_import_only_what_the_table_allows() -> None:
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in targets
        if _unit(target) != _unit(module) and _unit(target) not in ALLOWED[_unit(module)]
    )
    assert offenders == []


def test_the_repository_imports_only_what_it_holds_of_routing_and_features() -> None:
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in targets
        if (_unit(module), _unit(target)) in NARROW
        and target not in NARROW[_unit(module), _unit(target)]
    )
    assert offenders == []


def test_no_cycle_between_packages() -> None:
    units: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        units.setdefault(_unit(module), set()).update(
            _unit(t) for t in targets if _unit(t) != _unit(module)
        )
    assert _cycles(units) == []


def test_no_cycle_between_modules() -> None:
    assert _cycles(_graph()) == []


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
    assert _where("prometheus_client") == {
        "metrics.py",
        "tallies.py",
        "drift_metrics.py",
        "rollout_metrics.py",
        "payload_metrics.py",
    }


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
