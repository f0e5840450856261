"""Issue 24, item 21: the ``example`` extra installs what the example imports; every extra is
documented on the installation page."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
#: Import names whose distribution has another name, for when the package is not installed here.
KNOWN_DISTRIBUTIONS = {"cv2": "opencv-python-headless", "sklearn": "scikit-learn",
                       "lightning": "lightning", "yaml": "pyyaml"}


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> tuple[str, list[str]]:
    """``"mmfusion[a,b]>=1"`` -> ``("mmfusion", ["a", "b"])``."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", requirement)
    assert match, requirement
    extras = [e.strip() for e in (match.group(2) or "").split(",") if e.strip()]
    return canonical(match.group(1)), extras


def extra_distributions(extra: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """Distributions an extra installs, following self-references such as ``mmfusion[dicom]``."""
    found: set[str] = set()
    for requirement in PROJECT["optional-dependencies"][extra]:
        name, extras = requirement_name(requirement)
        if name == canonical(PROJECT["name"]):
            for sub in extras:
                assert sub not in seen, f"extra {extra!r} includes itself through {sub!r}"
                found |= extra_distributions(sub, seen | {extra})
        else:
            found.add(name)
    return found


def core_distributions() -> set[str]:
    return {requirement_name(r)[0] for r in PROJECT["dependencies"]}


def _guarded_by_import_error(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """True for an import inside ``try: ... except ImportError`` (an optional nicety)."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try):
            for handler in node.handlers:
                names = ast.unparse(handler.type) if handler.type is not None else ""
                if "ImportError" in names or "ModuleNotFoundError" in names:
                    return True
    return False


def example_imports() -> dict[str, list[str]]:
    """Third-party top-level packages imported by examples/liver_fibrosis/*.py -> the files."""
    local = {"examples", "mmfusion"}
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "examples" / "liver_fibrosis").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in local or top == "__future__":
                    continue
                if _guarded_by_import_error(node, parents):
                    continue
                found.setdefault(top, []).append(path.name)
    return found


@functools.lru_cache(maxsize=1)
def _installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distribution_of(import_name: str) -> str:
    installed = _installed().get(import_name)
    if installed:
        return canonical(installed[0])
    return canonical(KNOWN_DISTRIBUTIONS.get(import_name, import_name))


def test_the_scan_finds_the_examples_optional_imports() -> None:
    """The scanner itself: it sees imports inside functions, and skips guarded ones."""
    found = example_imports()
    # yaml and jsonargparse are imported inside functions only (matplotlib and scipy were, until
    # issue 26 moved the figures and the t-interval into the library)
    assert {"lightning", "yaml", "jsonargparse", "torch", "numpy"} <= set(found)
    assert "tensorboard" not in found  # runner.py: inside try/except ImportError


def test_every_package_the_example_imports_is_installed_by_the_example_extra() -> None:
    provided = core_distributions() | extra_distributions("example")
    missing = {
        name: (distribution_of(name), files)
        for name, files in example_imports().items()
        if distribution_of(name) not in provided
    }
    assert not missing, f'pip install "mmfusion[example]" lacks {missing}'


def test_the_example_extra_covers_lightning_and_the_phantoms_dicom_site() -> None:
    """make train generates the phantom, whose site C is written (and read) as DICOM by
    mmfusion.liver / mmfusion.data (pydicom, imported inside those modules)."""
    example = extra_distributions("example")
    assert {"lightning", "matplotlib", "pydicom", "pylibjpeg-rle"} <= example
    assert extra_distributions("dicom") <= example and extra_distributions("lightning") <= example


def test_all_installs_every_extra() -> None:
    extras = set(PROJECT["optional-dependencies"]) - {"all"}
    union = set().union(*(extra_distributions(e) for e in extras))
    assert extra_distributions("all") == union


def test_installation_page_lists_every_extra_with_what_it_enables() -> None:
    text = (ROOT / "docs" / "installation.rst").read_text(encoding="utf-8")
    for extra in PROJECT["optional-dependencies"]:
        # one row of the extras table: the name, then what it installs and enables
        rows = [line for line in text.splitlines() if re.match(rf"\s*\* - ``{extra}``\s*$", line)]
        assert rows, f"docs/installation.rst: no row for the extra {extra!r}"
