"""No import cycles in the installed package: ``sfrs_edge`` with ``train/`` and ``export/``.

The graph is read from the source with :mod:`ast`: module-level, function-level *and*
``if TYPE_CHECKING:`` imports count (a lazy import is still a dependency, and a type-only
import still ties the two modules' designs together: a circle through one is a circle). An edge goes to the most specific module an import names: ``from . import demo``
depends on ``pkg.demo``; ``from .maps import build_map`` on ``pkg.maps``.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# folder in the repository → import name once installed (pyproject's package-dir mapping)
ROOTS = {"sfrs_edge": "sfrs_edge", "train": "sfrs_edge.train", "export": "sfrs_edge.export"}


def module_files() -> dict[str, Path]:
    """Every module of the package by its installed name."""
    out = {}
    for folder, name in ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([name, *parts])] = path
    return out


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Import statements anywhere in the tree (``if TYPE_CHECKING:`` bodies included)."""
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def _our_module(target: str, files: dict[str, Path]) -> str:
    """The longest prefix of ``target`` that is one of our modules ('' for other packages)."""
    while target and target not in files:
        target = target.rpartition(".")[0]
    return target


def import_graph() -> dict[str, set[str]]:
    """module → the package's modules it imports."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                # ``from pkg import sub`` names the submodule, ``from pkg import func`` pkg
                targets = [f"{source}.{a.name}" for a in node.names]
            for target in targets:
                deps.add(_our_module(target, files))
        deps.discard(name)
        deps.discard("")
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child) :] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


def test_graph_sees_all_three_folders_and_lazy_imports():
    graph = import_graph()
    assert {"sfrs_edge.localize", "sfrs_edge.train.trainer", "sfrs_edge.export.pipeline"} <= set(
        graph
    )
    # function-level (lazy) imports count: the CLI reaches train/ only inside commands
    assert "sfrs_edge.train.trainer" in graph["sfrs_edge.cli.train"]
    assert "sfrs_edge.train.model" in graph["sfrs_edge.train.checkpoint"]


def test_type_checking_imports_count():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import X\n")
    assert [n.module for n in _imports(tree) if isinstance(n, ast.ImportFrom)] == ["typing", "b"]


def test_find_cycle_names_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
