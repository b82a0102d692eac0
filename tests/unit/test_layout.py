"""The dependency rules of docs/architecture.md, read from the source with `ast`.

Every import counts, wherever it is written: inside functions, and under
`if TYPE_CHECKING:` (a type-level cycle is still a cycle between two modules'
jobs, and becomes a real one the day the import is needed at run time).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 400
# Modules allowed past MAX_LINES; this set may only shrink (it is empty).
LONG_MODULES: set[str] = set()
# Cycles that predate the rule; this set may only shrink.
KNOWN_CYCLES: set[frozenset[str]] = set()
# Who may read the config tree; everything else receives values.
CONFIG_READERS = ("lb.config", "lb.build", "lb.app", "lb.reload", "lb.cli", "lb.workers",
                  "lb.admin", "lb.health", "lb.pool", "lb.renewal")


def _within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


@cache
def _modules() -> dict[str, Path]:
    found = {}
    for top in ("lb", "probes"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(name: str) -> Iterator[str]:
    """Every module name `name` imports, resolved against the modules on disk."""
    path = _modules()[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in _modules() else base


def _ancestors(name: str) -> Iterator[str]:
    parts = name.split(".")
    for i in range(1, len(parts)):
        yield ".".join(parts[:i])


@cache
def _graph() -> dict[str, frozenset[str]]:
    """lb's module → the lb modules its imports run.

    Importing a module from outside its package runs the package's __init__
    first, so that is an edge too; a package's own modules are inside it.
    """
    lb = [m for m in _modules() if _within(m, "lb")]
    graph = {}
    for name in lb:
        edges = set()
        for target in _imported(name):
            while target and target not in _modules():
                target = target.rpartition(".")[0]
            if not _within(target, "lb"):
                continue
            edges.add(target)
            edges.update(p for p in _ancestors(target) if p not in set(_ancestors(name)))
        edges.discard(name)
        graph[name] = frozenset(edges)
    return graph


def _cycles() -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_frontend_wings_never_read_the_config() -> None:
    offenders = {
        (name, target)
        for name in _modules() if _within(name, "lb.l4", "lb.l7")
        for target in _imported(name) if _within(target, "lb.config", "lb.build")
    }
    assert offenders == set()


def test_probes_import_nothing_from_lb() -> None:
    offenders = {
        (name, target)
        for name in _modules() if _within(name, "probes")
        for target in _imported(name) if _within(target, "lb")
    }
    assert offenders == set()


def test_only_the_builder_app_cli_and_state_owners_read_the_config() -> None:
    readers = {
        name for name in _modules()
        if any(_within(t, "lb.config") for t in _imported(name))
    }
    assert {r for r in readers if not _within(r, *CONFIG_READERS)} == set()


def test_no_module_is_over_400_lines() -> None:
    long = {
        name: lines for name, path in _modules().items()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert set(long) <= LONG_MODULES, long


def test_lb_has_no_import_cycle_but_the_known_ones() -> None:
    cycles = _cycles()
    assert set(cycles) <= KNOWN_CYCLES, cycles
    kept_clean = ("lb.config", "lb.build", "lb.l4", "lb.l7")
    assert [c for c in cycles if any(_within(m, *kept_clean) for m in c)] == []


def test_the_graph_sees_relative_and_type_checking_imports() -> None:
    # lb.seams imports the pool only under `if TYPE_CHECKING:`.
    assert "lb.pool" in _graph()["lb.seams"]
    assert "lb.config.model" in _graph()["lb.config.frontends"]
    assert "lb.config" in _graph()["lb.pool"]
