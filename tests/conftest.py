"""Shared test hygiene: what one test registers for itself does not reach the next test.

The docs snippets and the README blocks register fusions, encoders and models the way a user's
file does (``@register_fusion("gated_sum")`` at import). They run inside the test process
(``runpy`` / ``exec``), so without this their names would stay registered for every later test of
that worker, and tests that check the exact list of registered names (``expected 'attention' or
'late'``) would pass or fail by test order. After each test, the names it added are dropped again
when their factory cannot be imported back by its module and qualified name (a class defined by a
script run as ``__main__``, by ``exec`` or inside a test function). A class of an importable module
(a plug-in, a domain package imported during the test) stays registered: its module is imported
once per process and would not register it again.

Model presets are left alone: a preset carries no module to tell a script's from a domain
package's (``import mmfusion.liver`` registers the liver's during whichever test imports it first),
and an extra preset name changes no other test.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


def _importable(factory: object) -> bool:
    """Whether ``factory`` is what its module's attribute of its qualified name holds."""
    obj: object = sys.modules.get(getattr(factory, "__module__", None) or "")
    for part in str(getattr(factory, "__qualname__", "<?>")).split("."):
        obj = getattr(obj, part, None)
    return obj is factory


@pytest.fixture(autouse=True)
def _forget_throwaway_registrations() -> Iterator[None]:
    from mmfusion.nn import registry

    kinds = (registry._FUSIONS, registry._ENCODERS)
    before = {id(kind): set(kind.entries) for kind in kinds}
    yield
    for kind in kinds:
        for name in set(kind.entries) - before[id(kind)] - set(kind.builtins):
            if not _importable(kind.entries[name]):
                del kind.entries[name]
