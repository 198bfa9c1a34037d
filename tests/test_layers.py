"""Imports only look down: cli > serve > api > bench > export > runtime > models > operators > core.

core is the top-level modules ``ddpg/*.py`` and ``ddpg/metrics``. The package's front doors sit above cli:
``ddpg/__init__.py`` (``ddpg.restore`` etc., a lazy view of ``ddpg.api``) and ``ddpg/__main__.py``
(``python -m ddpg``); so no module may ``import ddpg`` itself, only its submodules.

Every module under ``src/ddpg`` is parsed with ``ast``; every import (module level and inside
functions, absolute and relative) is resolved to a ``ddpg`` module and mapped to its layer. An edge
to a higher layer fails, naming file:line, importer → imported and both layers; a cycle between
packages fails, naming the cycle.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first; a module may import its own layer or any layer earlier in this list.
LAYERS = ("core", "operators", "models", "runtime", "export", "bench", "api", "serve", "cli", "entry")
ENTRY = ("ddpg", "ddpg.__main__")
RANK = {name: rank for rank, name in enumerate(LAYERS)}


@dataclass(frozen=True)
class Edge:
    """One import of a ddpg module: where it is written and what it names."""

    path: str
    line: int
    importer: str
    imported: str


def layer_of(module: str) -> str:
    """The layer of a dotted ``ddpg`` module: its first sub-package, core, or entry (the front doors)."""
    if module in ENTRY:
        return "entry"
    parts = module.split(".")
    return parts[1] if parts[1] in RANK and parts[1] not in ("core", "entry") else "core"


def package_of(module: str) -> str:
    """The node of a module in the package graph: ``ddpg.x`` for ``ddpg.x.y``, "core", or the front door."""
    layer = layer_of(module)
    if layer == "entry":
        return module
    return "core" if layer == "core" else ".".join(module.split(".")[:2])


def _base(importer: str, is_package: bool, level: int) -> list[str]:
    """The package a relative import of ``level`` dots starts from."""
    parts = importer.split(".") if is_package else importer.split(".")[:-1]
    return parts[: len(parts) - (level - 1)]


def imports_of(source: str, importer: str, path: str, is_package: bool = False) -> list[Edge]:
    """Every ddpg import in ``source`` (module ``importer``), with relative imports resolved."""
    edges = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(_base(importer, is_package, node.level) + ([base] if base else []))
            # ``from pkg import name`` may name a submodule: count the deepest reading.
            names = [f"{base}.{alias.name}" for alias in node.names] if base else []
            names = [name if _is_module(name) else base for name in names]
        for name in dict.fromkeys(names):  # ``from x import a, b`` is one edge to x
            if name == "ddpg" or name.startswith("ddpg."):
                edges.append(Edge(path, node.lineno, importer, name))
    return edges


def _is_module(dotted: str) -> bool:
    """Whether ``dotted`` names a module or package under src (not an attribute)."""
    target = SRC.joinpath(*dotted.split("."))
    return target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()


def all_edges() -> list[Edge]:
    """The ddpg imports of every module under src/ddpg."""
    edges = []
    for file in sorted((SRC / "ddpg").rglob("*.py")):
        rel = file.relative_to(SRC).with_suffix("")
        is_package = rel.name == "__init__"
        module = ".".join(rel.parts[:-1] if is_package else rel.parts)
        edges += imports_of(file.read_text(), module, str(file.relative_to(SRC.parent)), is_package)
    return edges


def upward(edges: list[Edge]) -> list[str]:
    """One line per edge that points to a higher layer."""
    bad = []
    for edge in edges:
        low, high = layer_of(edge.importer), layer_of(edge.imported)
        if RANK[high] > RANK[low]:
            bad.append(f"{edge.path}:{edge.line}: {edge.importer} ({low}) -> {edge.imported} ({high})")
    return bad


def package_cycles(edges: list[Edge]) -> list[list[str]]:
    """Import cycles between packages (each as the list of packages around it)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        a, b = package_of(edge.importer), package_of(edge.imported)
        if a != b:
            graph.setdefault(a, set()).add(b)
    return _cycles(graph)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The cycles a depth-first walk of ``graph`` (node → the nodes it imports) meets, each closed on its start."""
    cycles, done = [], set()

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, stack + [node])
        done.add(node)

    for start in sorted(graph):
        visit(start, [])
    return cycles


def test_no_import_points_up() -> None:
    bad = upward(all_edges())
    assert not bad, "imports that point to a higher layer:\n" + "\n".join(bad)


def test_no_import_cycle_between_packages() -> None:
    cycles = package_cycles(all_edges())
    assert not cycles, "import cycles between packages:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_catches_a_planted_upward_edge() -> None:
    source = "import torch\n\ndef f():\n    from ..cli import main\n    from ddpg.export import onnx_export\n"
    edges = imports_of(source, "ddpg.runtime.fake", "src/ddpg/runtime/fake.py")
    bad = upward(edges)
    assert bad == [
        "src/ddpg/runtime/fake.py:4: ddpg.runtime.fake (runtime) -> ddpg.cli.main (cli)",
        "src/ddpg/runtime/fake.py:5: ddpg.runtime.fake (runtime) -> ddpg.export.onnx_export (export)",
    ]


def test_the_checker_resolves_relative_imports_and_allows_downward_ones() -> None:
    source = "from . import schedule\nfrom .. import io\nfrom ..operators import base\n"
    edges = imports_of(source, "ddpg.models.fake", "m.py")
    assert [edge.imported for edge in edges] == ["ddpg.models", "ddpg.io", "ddpg.operators.base"]
    assert upward(edges) == []


def test_the_checker_names_a_planted_package_cycle() -> None:
    edges = [Edge("a.py", 1, "ddpg.runtime.a", "ddpg.export.b"), Edge("b.py", 2, "ddpg.export.b", "ddpg.runtime.c")]
    assert package_cycles(edges) == [["ddpg.export", "ddpg.runtime", "ddpg.export"]]


def module_cycles(edges: list[Edge]) -> list[list[str]]:
    """Import cycles between modules (module level and inside functions), each as the modules around it; a
    package's ``__init__`` counts as the package."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        if edge.importer != edge.imported and not edge.importer.startswith(edge.imported + "."):
            graph.setdefault(edge.importer, set()).add(edge.imported)
    return _cycles(graph)


def test_no_import_cycle_between_modules() -> None:
    cycles = module_cycles(all_edges())
    assert not cycles, "import cycles between modules:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_names_a_planted_module_cycle() -> None:
    edges = [Edge("a.py", 1, "ddpg.api.a", "ddpg.api.b"), Edge("b.py", 9, "ddpg.api.b", "ddpg.api.a"),
             Edge("c.py", 2, "ddpg.api.c", "ddpg.api")]
    assert module_cycles(edges) == [["ddpg.api.a", "ddpg.api.b", "ddpg.api.a"]]
