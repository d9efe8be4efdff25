"""No import cycles in `lb/` or `backend/`.

The graph is built with `ast` from the source files, without importing anything. Every import
statement counts as an edge, wherever it stands: at module level, inside a function (a "lazy"
import only hides a cycle until the first call) and under `if TYPE_CHECKING:` (a cycle in the
types is a cycle in the design: the two modules cannot be read, or split, one without the
other). Nodes are modules: `from pkg import name` is an edge to `pkg.name` when that is a module
of ours, else to `pkg` (its `__init__`). Importing `a.b.c` does not add edges to `a` and `a.b`:
the packages' `__init__` files only re-export, and counting them would make every package that
re-exports a submodule a cycle with it.

Migrations are left out (Django writes them and they import nothing of ours but models).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = ("lb", "backend")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            found[module_name(path)] = path
    return found


def imported(module: str, source: str, known: set[str], *, package: bool = False) -> Iterator[str]:
    """The modules of ours (`known`) that `module` imports anywhere in its `source`."""
    here = module if package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here.split(".")
                if node.level > 1:
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    yield sub
                elif base in known:
                    yield base


def import_graph() -> dict[str, set[str]]:
    modules = source_modules()
    known = set(modules)
    return {
        name: {
            target
            for target in imported(
                name, path.read_text(), known, package=path.name == "__init__.py"
            )
            if target != name
        }
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        # iterative, so a deep graph cannot hit the recursion limit
        nonlocal counter
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_graph_sees_imports_of_every_kind() -> None:
    """The builder itself: module-level, lazy, relative and TYPE_CHECKING imports are edges."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "from .other import thing\n"
        "from ..up import name\n"
        "import lb.direct\n"
        "if TYPE_CHECKING:\n"
        "    from lb.server import Server\n"
        "def later():\n"
        "    from lb import config\n"
    )
    known = {"lb", "lb.x.sibling", "lb.x.other", "lb.up", "lb.direct", "lb.server", "lb.config"}
    edges = set(imported("lb.x.mod", source, known))
    assert edges == known - {"lb"}
    # a package's relative import is relative to the package itself
    assert set(imported("lb.x", "from .other import a", known, package=True)) == {"lb.x.other"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    # the real tree: the edges resolve to our modules
    graph = import_graph()
    assert "backend.bookings.models" in graph["backend.bookings.services"]
    assert "lb.config" in graph["lb.app"]


def test_no_import_cycles_in_lb_or_backend() -> None:
    graph = import_graph()
    assert len([m for m in graph if m.startswith("lb.")]) > 20, "lb/ not found"
    assert len([m for m in graph if m.startswith("backend.")]) > 20, "backend/ not found"
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_decisions_and_the_proxy_take_options_not_the_configuration() -> None:
    """lb/admission/, lb/upstream/ and lb/proxy.py get small option values; only lb/config.py
    (and the wiring that calls it) knows the environment's Settings."""
    graph = import_graph()
    offenders = sorted(
        name
        for name, targets in graph.items()
        if (name.startswith(("lb.admission.", "lb.upstream.")) or name == "lb.proxy")
        and "lb.config" in targets
    )
    assert not offenders, f"these import lb.config: {offenders}"
