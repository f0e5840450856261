"""Issue 25: imports inside ``mmfusion.models`` (and ``mmfusion.nn``) run one way.

Read from the source with :mod:`ast`, without importing anything: the graph of imports between
sibling modules has no cycle, and no function imports a sibling module (the old
``builder -> classifier -> pretrained -> builder`` circle was held together by one). The generic
floors never name the liver domain, not even in a docstring.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mmfusion"


def _imports(package: str) -> tuple[dict[str, set[str]], list[str]]:
    """Sibling -> siblings it imports at module level; and the function-level sibling imports."""
    folder = SRC / package
    modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    prefix = f"mmfusion.{package}."
    graph: dict[str, set[str]] = {m: set() for m in modules}
    nested: list[str] = []

    def targets(node: ast.Import | ast.ImportFrom) -> set[str]:
        names: set[str] = set()
        if isinstance(node, ast.Import):
            names = {a.name for a in node.names}
        elif node.level == 1:  # from .x import y / from . import x
            names = {f"{prefix}{node.module}"} if node.module else {f"{prefix}{a.name}" for a in node.names}
        elif node.module == f"mmfusion.{package}":
            names = {f"{prefix}{a.name}" for a in node.names}
        elif node.module:
            names = {node.module}
        return {n[len(prefix):].split(".")[0] for n in names if n.startswith(prefix)} & modules

    for module in modules:
        tree = ast.parse((folder / f"{module}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import | ast.ImportFrom) and targets(inner):
                        nested.append(f"{module}.{node.name} imports {sorted(targets(inner))}")
        for node in tree.body:  # module level, including `if TYPE_CHECKING:` blocks
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom) and not isinstance(
                    node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
                ):
                    graph[module] |= targets(inner) - {module}
    return graph, nested


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize("package", ["models", "nn"])
def test_sibling_imports_run_one_way_and_never_inside_a_function(package: str) -> None:
    graph, nested = _imports(package)
    assert _cycle(graph) is None
    assert nested == []


def test_the_models_package_imports_in_the_documented_order() -> None:
    graph, _ = _imports("models")
    assert graph["config"] == set()
    assert graph["registry"] == {"config"}
    assert graph["checkpoint"] == {"config"}
    assert graph["classifier"] == {"checkpoint", "config"}
    assert graph["builder"] == {"classifier", "config", "registry"}
    assert graph["pretrained"] == {"builder", "checkpoint", "classifier", "config"}


@pytest.mark.parametrize("package", ["nn", "models"])
def test_the_generic_floors_never_name_the_liver(package: str) -> None:
    pattern = re.compile(r"mmfusion\.liver|from \.\.liver|from \.liver")
    hits = [
        f"{path.relative_to(SRC)}:{number}"
        for path in sorted((SRC / package).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if pattern.search(line)
    ]
    assert hits == []
