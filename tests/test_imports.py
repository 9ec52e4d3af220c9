"""No import circle among the modules of agcam/, models/ and baselines/, nor among their packages.

What counts as "A imports B" (an edge of the graph):
- every ``import`` / ``from ... import`` statement in A that can run: at module level or inside a
  function (a deferred import still makes A depend on B); not those under ``if TYPE_CHECKING:``,
  which never run;
- the target is the most specific module of ours it names: ``from agcam import distributed`` is
  an edge to ``agcam.distributed``; ``from agcam import AGCAM`` (a name) an edge to the package
  module ``agcam`` (its ``__init__``); relative imports are resolved; outside modules are left out.
What does not count: the implicit import of a parent package when a submodule is imported
(importing ``agcam.registry`` runs ``agcam/__init__.py`` first). The package ``__init__`` files
are the top of the graph, like timm's ``models/__init__.py``: ``agcam/__init__.py`` is a face
that hands names on (the methods register themselves when the registry first looks a name
up). A module of ours that imports one of these packages by name
(``from agcam import get_explainer``) is an edge to the ``__init__`` and would close a circle
through it; the test catches that too.

Packages: every folder with an ``__init__.py`` is a node (``agcam``, ``agcam.cli``,
``agcam.evaluation``, ..., ``baselines``, ``models``); a module edge ``a -> b`` is a package edge
``package(a) -> package(b)`` when they differ; and so, one level up, between the three top-level
packages. Both graphs must be circle-free: ``agcam`` does not import ``baselines`` (the registry
finds the method packages by name, :data:`agcam.registry.METHOD_PACKAGES`, like entry points).
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
    # the package init is a face; the methods import the registry, nothing in agcam the baselines
    assert {"agcam.method", "agcam.registry", "agcam.maps"} <= graph["agcam"]
    assert not any(t.startswith("baselines") for m, ts in graph.items() if m.startswith("agcam")
                   for t in ts)
    assert "agcam.registry" in graph["baselines.gae"]
    assert "agcam.explainer" in graph["baselines.gradcam"]
    # deferred imports count (agcam.cli.common imports agcam.datasets inside a function)
    assert "agcam.datasets" in graph["agcam.cli.common"]


def package_of(module: str, modules: Dict[str, Path], depth: Optional[int] = None) -> str:
    """The package a module belongs to (itself for a package ``__init__``), or its first
    ``depth`` name parts."""
    if depth is not None:
        return ".".join(module.split(".")[:depth])
    return module if modules[module].name == "__init__.py" else module.rsplit(".", 1)[0]


def package_graph(depth: Optional[int] = None) -> Dict[str, Set[str]]:
    modules = module_files()
    graph: Dict[str, Set[str]] = {}
    for module, targets in import_graph().items():
        if module == "agcam.__main__":   # ``python -m agcam``: a program on top, like the scripts
            continue
        source = package_of(module, modules, depth)
        graph.setdefault(source, set())
        for target in targets:
            other = package_of(target, modules, depth)
            graph.setdefault(other, set())
            if other != source:
                graph[source].add(other)
    return graph


def test_no_import_circle():
    graph = import_graph()
    assert len(graph) > 30
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)
    edges = sum(len(targets) for targets in graph.values())
    print(f"modules {len(graph)}, edges {edges}, circles 0")


def test_no_circle_between_packages():
    for depth in (None, 1):
        graph = package_graph(depth)
        cycle = find_cycle(graph)
        assert cycle is None, " -> ".join(cycle)
        edges = sum(len(targets) for targets in graph.values())
        print(f"packages {sorted(graph)}, edges {edges}, circles 0")
    top = package_graph(1)
    assert set(top) == {"agcam", "baselines", "models"}
    assert top["baselines"] == {"agcam", "models"} and "baselines" not in top["agcam"]
    packages = set(package_graph())
    assert {"agcam.cli", "agcam.evaluation", "agcam.store", "agcam.datasets"} <= packages


def test_a_circle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
