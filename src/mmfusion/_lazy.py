"""Module attributes loaded on first use (PEP 562), the one mechanism every package here shares."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def attach(
    package: str, submodules: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` that import each name from its submodule.

    Args:
        package: The package's ``__name__``.
        submodules: Submodule -> the public names it defines, e.g.
            ``{"mmfusion.nn": ["SpatialAttention", ...]}``.

    Returns:
        ``(__getattr__, __dir__)``: assign both at the package's module level. A loaded name is
        stored in the package, so later lookups do not call ``__getattr__`` again.
    """
    where = {name: module for module, names in submodules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__
