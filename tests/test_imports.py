"""No import circle among the modules of agcam/, models/ and baselines/.

What counts as "A imports B" (an edge of the graph):
- every ``import`` / ``from ... import`` statement in A that can run: at module level or inside a
  function (a deferred import still makes A depend on B); not those under ``if TYPE_CHECKING:``,
  which never run;
- the target is the most specific module of ours it names: ``from agcam import distributed`` is
  an edge to ``agcam.distributed``; ``from agcam import AGCAM`` (a name) an edge to the package
  module ``agcam`` (its ``__init__``); relative imports are resolved; outside modules are left out.
What does not count: the implicit import of a parent package when a submodule is imported
(importing ``agcam.registry`` runs ``agcam/__init__.py`` first). The package ``__init__`` files
are the top of the graph, like timm's ``models/__init__.py``: ``agcam/__init__.py`` imports
``agcam.method`` and ``baselines`` so that they register themselves; that is the package's
init, not an edge back from the registry they import. A module of ours that imports one of
these packages by name (``from agcam import get_explainer``) is an edge to the ``__init__`` and
would close a circle through it; the test catches that too.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

from tests.helpers import ROOT

PACKAGES = ("agcam", "models", "baselines")


def module_files() -> Dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST):
    """Import statements that can run (every one but those under ``if TYPE_CHECKING:``)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            stack.append(child)


def _ours(name: str, modules: Dict[str, Path]) -> Optional[str]:
    """The longest prefix of ``name`` that is one of our modules."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph() -> Dict[str, Set[str]]:
    modules = module_files()
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        for node in _runtime_imports(tree):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                module = _ours(target, modules)
                if module is not None and module != name:
                    graph[name].add(module)
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One circle ``[a, b, ..., a]`` of the graph, or ``None``."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {node: WHITE for node in graph}
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        colour[node] = GREY
        path.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == GREY:
                return path[path.index(nxt):] + [nxt]
            if colour[nxt] == WHITE:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        colour[node] = BLACK
        return None

    for node in sorted(graph):
        if colour[node] == WHITE:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_is_read_as_described():
    graph = import_graph()
    # registry and errors at the bottom: they import nothing of ours
    assert graph["agcam.registry"] == set() and graph["agcam.errors"] == set()
    # the package init registers the methods; the methods import the registry
    assert {"agcam.method", "baselines", "agcam.registry"} <= graph["agcam"]
    assert "agcam.registry" in graph["baselines.gae"]
    assert "agcam.explainer" in graph["baselines.gradcam"]
    # deferred imports count (agcam.cli imports agcam.datasets inside a function)
    assert "agcam.datasets" in graph["agcam.cli"]


def test_no_import_circle():
    graph = import_graph()
    assert len(graph) > 30
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_a_circle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
