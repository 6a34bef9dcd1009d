"""No module of ``arr_prefect`` imports itself back, not even for type checkers or in a function.

The graph is read from the source (AST), so it sees what a reader sees: imports at module
level, under ``if TYPE_CHECKING:``, inside functions, relative ones, and
``importlib.import_module("...")`` with a literal name. ``arr_prefect/flows`` and
``arr_prefect/tasks`` are links to the repository's ``flows/`` and ``tasks/``: followed.
"""

from __future__ import annotations

import ast
import itertools
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import arr_prefect

Graph = dict[str, dict[str, int]]
"""module -> {module it imports: line of the first such import}."""


def _modules(root: Path, package: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for directory, subdirectories, files in os.walk(root, followlinks=True):
        subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
        for name in files:
            if not name.endswith(".py"):
                continue
            path = Path(directory, name)
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported(node: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, str | None]]:
    """(module named, name taken from it or None) for each import ``node`` makes."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, None
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join([*base, *([node.module] if node.module else [])])
        else:
            target = node.module or ""
        for alias in node.names:
            yield target, alias.name
    elif (
        isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            or (isinstance(node.func, ast.Name) and node.func.id == "import_module")
        )
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        yield node.args[0].value, None


def import_graph(root: Path, package: str) -> Graph:
    """Every module of ``package`` (at ``root``) and the package modules it imports."""
    modules = _modules(root, package)
    graph: Graph = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for target, name in _imported(node, module, path.name == "__init__.py"):
                # `from pkg import sub` imports the submodule `pkg.sub` when there is one.
                named = f"{target}.{name}" if name is not None else None
                hit = named if named in modules else target if target in modules else None
                if hit is not None and hit != module:
                    line = getattr(node, "lineno", 0)
                    edges[hit] = min(edges.get(hit, line), line)
        graph[module] = edges
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) through each group of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    counter = 0

    def visit(start: str) -> None:  # Tarjan's strongly connected components, iteratively
        nonlocal counter
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(group)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    found = []
    for group in groups:
        start = min(group)
        paths = {start: [start]}
        frontier = [start]
        while frontier:  # breadth first: the shortest way back to start within the group
            node = frontier.pop(0)
            for successor in sorted(graph[node]):
                if successor == start:
                    found.append([*paths[node], start])
                    frontier = []
                    break
                if successor in group and successor not in paths:
                    paths[successor] = [*paths[node], successor]
                    frontier.append(successor)
    return sorted(found)


def describe(graph: Graph, cycle: list[str]) -> str:
    """``a -> b (a, line 12) -> a (b, line 40)``."""
    steps = [cycle[0]]
    for importer, imported in itertools.pairwise(cycle):
        steps.append(f"{imported} ({importer}, line {graph[importer][imported]})")
    return " -> ".join(steps)


def test_the_package_has_no_import_cycles() -> None:
    """No module of arr_prefect imports, directly or through others, a module that imports it."""
    root = Path(arr_prefect.__file__).parent
    graph = import_graph(root, "arr_prefect")
    assert "arr_prefect.emulator.app" in graph
    assert "arr_prefect.flows.session" in graph, "the flows link was not followed"
    found = [describe(graph, cycle) for cycle in cycles(graph)]
    assert not found, "import cycles:\n" + "\n".join(found)


CYCLE_KINDS = [
    pytest.param("import pkg.b\n", "import pkg.a\n", id="module-level"),
    pytest.param(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n",
        "from pkg.a import A\n",
        id="type-checking-only",
    ),
    pytest.param("def f():\n    from pkg import b\n", "from . import a\n", id="in-a-function"),
    pytest.param("from .b import B\n", "from .a import A\n", id="relative"),
    pytest.param(
        "import importlib\nimportlib.import_module('pkg.b')\n", "import pkg.a\n", id="import-module"
    ),
]


@pytest.mark.parametrize(("a_source", "b_source"), CYCLE_KINDS)
def test_a_cycle_of_each_kind_is_found(tmp_path: Path, a_source: str, b_source: str) -> None:
    """Two modules that import each other are reported, however the imports are written."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(textwrap.dedent(a_source) + "A = 1\n")
    (package / "b.py").write_text(textwrap.dedent(b_source) + "B = 1\n")
    (package / "c.py").write_text("import pkg.a\n")  # imports into the cycle, not part of it
    graph = import_graph(package, "pkg")
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]
    assert describe(graph, ["pkg.a", "pkg.b", "pkg.a"]).startswith("pkg.a -> pkg.b (pkg.a, line")
