"""Sphinx configuration for the mmfusion documentation.

Build with ``make docs`` (``sphinx -W --keep-going -b html docs docs/_build/html``): every warning
is an error. Nothing is fetched from the network at build time (no intersphinx); the theme (furo)
and all extensions come from the local environment.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path

from sphinx.pycode import ModuleAnalyzer, PycodeError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# The package is installed (editable) in the project's venv; fall back to the source tree so that
# a plain checkout builds too.
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(DOCS / "_ext"))  # mdresults, presets: tables read from files and code
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # examples.liver_fibrosis (the presets table)

import mmfusion  # noqa: E402

project = "mmfusion"
author = "mmfusion developers"
copyright = "2025, mmfusion developers"  # noqa: A001
release = mmfusion.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "mdresults",
    "presets",
    "fusions",
]

exclude_patterns = ["_build", "_ext", "snippets", "figures", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
language = "en"

# -- autodoc / napoleon -------------------------------------------------------------------------
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
autodoc_default_options = {"show-inheritance": True}
# Methods that mmfusion overrides without a docstring (``extra_repr``, some ``forward``) would
# otherwise show torch's generic nn.Module text; without their own docstring they are left out.
autodoc_inherit_docstrings = False
autosummary_generate = False  # the API pages list every object explicitly
python_use_unqualified_type_names = True
python_display_short_literal_types = True

napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" sections become ``.. attribute::`` entries, so that ``:attr:`` references resolve.
# The dataclasses (FusionOutput, ...) are therefore documented with ``autoclass`` WITHOUT
# ``:members:``: autodoc would document their fields a second time (duplicate object warnings).
napoleon_use_ivar = False
napoleon_use_rtype = False
napoleon_custom_sections = ["Shape"]  # a plain section: its bullet list renders as written

# Every cross-reference inside the package must resolve; references into torch, numpy and the
# standard library cannot (no intersphinx, no network) and are listed here instead.
nitpicky = True
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(torch|torchvision|numpy|np|os|time|pathlib|collections|typing|timm|cv2|matplotlib|sklearn"
        r"|lightning|pl|huggingface_hub|nn|contextlib)(\..*)?",
    ),
    (r"py:.*", r"(Tensor|Path|Module|Figure|Axes|ndarray|PathLike|Generator|Any)"),
    (r"py:.*", r"(Literal|Mapping|Sequence|Iterator|Iterable|Callable)"),
    (r"py:class", r"(np\.)?(float|int|bool|str|object|None)(64|32)?"),
    (r"py:.*", r"(\.\.\.|_\w+|optional)"),
    (r"py:class", r"'[^']*'"),  # the values of a Literal[...] field type
    (r"py:class", r"mmfusion\.models\.config\._C"),  # config_from_dict's TypeVar
    (r"py:class", r"mmfusion\.nn\.registry\._F"),  # register_fusion's / register_encoder's TypeVar
]

# -- HTML -----------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"mmfusion {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_theme_options = {
    "navigation_with_keys": True,
    "top_of_page_buttons": [],
}

# -- cross-references ----------------------------------------------------------------------------


def _public_target(target: str, objects: dict) -> str | None:
    """The documented name of an object that a docstring names by its defining module.

    Docstrings refer to ``mmfusion.nn.fusion.AttentionFusion`` or
    ``mmfusion.data.manifest.Manifest.labels``; the reference documents them where users import
    them from (``mmfusion.AttentionFusion``, ``mmfusion.data.Manifest.labels``). Try each package
    prefix of the target, longest first, with each tail of the target.
    """
    parts = target.split(".")
    if parts[0] != "mmfusion" or target in objects:
        return None
    packages = [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
    for start in range(1, len(parts)):
        tail = ".".join(parts[start:])
        for package in packages:
            candidate = f"{package}.{tail}"
            if candidate != target and candidate in objects:
                return candidate
    return None


def _resolve_reexport(app, env, node, contnode):  # type: ignore[no-untyped-def]
    """``missing-reference`` handler: find the public name of a cross-referenced mmfusion object.

    A short target (``read_manifest`` in the docstring of ``mmfusion.data.manifest``) is first
    qualified with the module and class it was written in. A name that is still unknown resolves
    when exactly one documented mmfusion object ends with it (``problems`` ->
    ``mmfusion.data.ManifestError.problems``); anything else stays a warning.
    """
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    objects = domain.objects
    target = node.get("reftarget", "").lstrip(".~")
    module, cls = node.get("py:module"), node.get("py:class")
    candidates = [target]
    if not target.startswith("mmfusion.") and module:
        if cls:
            candidates.insert(0, f"{module}.{cls}.{target}")
        candidates.append(f"{module}.{target}")
    public = None
    for candidate in candidates:
        public = candidate if candidate in objects else _public_target(candidate, objects)
        if public:
            break
    if public is None:
        suffix = "." + target
        matches = [
            name for name in objects if name.startswith("mmfusion") and name.endswith(suffix)
        ]
        public = matches[0] if len(matches) == 1 else None
    if public is None:
        return None
    node = node.deepcopy()
    node["reftarget"] = public
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], public, node, contnode
    )


def _data_docstring(app, what, name, obj, options, lines):  # type: ignore[no-untyped-def]
    """Show a constant's doc comment as written, found in the module that defines it.

    Two problems of autodoc with module constants: a re-exported constant
    (``mmfusion.JOINT``, defined with its doc comment in ``mmfusion.nn.heads``) gets
    the docstring of its type (``tuple``), because autodoc reads only the doc comments of the module
    it documents; and napoleon reads a doc comment whose first line has a colon
    (``Name of the output: ...``) as ``type: description``. A constant's doc comment is plain
    text, so it is used verbatim.
    """
    if what != "data":
        return
    short = name.rpartition(".")[2]
    for modname, module in sorted(sys.modules.items()):
        if not modname.startswith("mmfusion") or getattr(module, short, None) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except PycodeError:
            continue
        if ("", short) in docs:
            lines[:] = list(docs[("", short)])
            return
    type_doc = inspect.getdoc(type(obj)) or ""
    if lines and " ".join("\n".join(lines).split()) == " ".join(type_doc.split()):
        lines[:] = []  # the docstring of the constant's type says nothing about the constant


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("missing-reference", _resolve_reexport)
    app.connect("autodoc-process-docstring", _data_docstring, priority=900)  # after napoleon
    return {"parallel_read_safe": True, "parallel_write_safe": True}
