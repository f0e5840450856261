"""The catalogue's docs page: one table read from the code, one short snippet per method.

``tests/test_docs.py`` runs every snippet; this file checks that each catalogue method has one of
at most ten lines of code on the page, and that the table's rows are the classes' own attributes
and the committed cost run's numbers.
"""

from __future__ import annotations

import ast
import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def fusions_ext() -> object:
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        yield importlib.import_module("fusions")
    finally:
        sys.path.remove(str(DOCS / "_ext"))


def code_lines(path: Path) -> int:
    """Lines of a snippet that are not its docstring, blank or a comment."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    doc = tree.body[0] if tree.body and isinstance(tree.body[0], ast.Expr) else None
    skip = set(range(doc.lineno, doc.end_lineno + 1)) if doc is not None else set()
    lines = path.read_text(encoding="utf-8").splitlines()
    return sum(1 for i, line in enumerate(lines, 1)
               if i not in skip and line.strip() and not line.strip().startswith("#"))


def test_every_catalogue_method_has_a_short_snippet_on_the_page(fusions_ext: object) -> None:
    page = (DOCS / "fusions.rst").read_text(encoding="utf-8")
    names = fusions_ext.catalogue()
    assert {"attention", "late", "gated", "perceiver", "evidential", "film"} <= set(names)
    for name in names:
        if name in ("attention", "late"):  # the paper's two, shown on the concepts page
            continue
        snippet = DOCS / "snippets" / f"fusion_{name}.py"
        assert snippet.is_file(), name
        assert f".. literalinclude:: snippets/fusion_{name}.py" in page, name
        assert code_lines(snippet) <= 10, f"{snippet.name}: {code_lines(snippet)} lines of code"
        assert f'"{name}"' in snippet.read_text(encoding="utf-8"), f"{snippet.name} builds {name}"
    assert ".. fusion-catalogue::" in page
    assert "fusions" in (DOCS / "index.rst").read_text(encoding="utf-8")


def test_the_table_is_the_classes_attributes_and_the_cost_run(fusions_ext: object) -> None:
    from mmfusion.nn.registry import get_fusion

    rows = {r[0]: r for r in fusions_ext.rows()}
    assert set(rows) == set(fusions_ext.catalogue())
    cost = {r["fusion"]: r for r in json.loads(fusions_ext.COST.read_text())["rows"]}
    for name, row in rows.items():
        cls = get_fusion(name)
        assert row[1] == cls.reference and row[4] == cls.missing
        assert row[5] == ("yes" if cls.compiles else "no")
        assert row[2].startswith(" / ".join(cls.kinds))
        if name in cost:
            assert row[6] == fusions_ext.human_count(cost[name]["fusion_params"])
        else:
            assert row[6] == "not measured"
