"""No import circle inside ``hedgerow.broker``: its modules form layers.

Every import statement counts, including those under ``if TYPE_CHECKING:`` and inside
functions: a circle that only type checking sees is still two modules that each need the
other to be understood. Modules that must name something of a higher layer (a session's
connection, a route's session) use a small protocol of their own instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "hedgerow" / "broker"


def module_imports(package: Path, name: str) -> dict[str, set[str]]:
    """{module: the modules of the same package it imports} (``name`` = its dotted name)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(package.glob("*.py")):
        module = path.stem
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found: set[str] = set()
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level == 1:
                    base = f"{name}.{node.module}" if node.module else name
                else:
                    base = node.module or ""
                if base == name:
                    targets = [f"{name}.{alias.name}" for alias in node.names]
                else:
                    targets = [base]
            for target in targets:
                if target.startswith(name + "."):
                    found.add(target[len(name) + 1 :].split(".")[0])
        found.discard(module)
        graph[module] = found & {p.stem for p in package.glob("*.py")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_circle_inside_the_broker() -> None:
    graph = module_imports(PACKAGE, "hedgerow.broker")
    assert "client_io" in graph and "hub" in graph["client_io"]  # the reader works
    assert cycles(graph) == [], "modules of hedgerow.broker import each other in a circle"


@pytest.mark.parametrize(
    "files",
    [
        {"a.py": "from hedgerow.broker.b import x\n", "b.py": "from hedgerow.broker.a import y\n"},
        {
            "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from hedgerow.broker.b import x\n",
            "b.py": "def f():\n    from hedgerow.broker import c\n",
            "c.py": "from . import a\n",
        },
    ],
)
def test_a_circle_is_caught(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    graph = module_imports(tmp_path, "hedgerow.broker")
    assert cycles(graph) == [sorted(n.removesuffix(".py") for n in files)]
