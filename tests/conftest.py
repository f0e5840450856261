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

Model presets: the installed plug-ins' presets (the liver's, through the ``mmfusion.plugins``
entry points) are loaded before each test; any preset name a test adds beyond them is dropped
after it (an extra name would change the registered-names list another test's error message
shows).
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
    from mmfusion.models import list_models
    from mmfusion.models import registry as models
    from mmfusion.nn import registry

    kinds = (registry._FUSIONS, registry._ENCODERS)
    before = {id(kind): set(kind.entries) for kind in kinds}
    presets = set(list_models())  # loads the installed plug-ins first
    yield
    for name in set(models._REGISTRY) - presets:
        del models._REGISTRY[name]
    for kind in kinds:
        for name in set(kind.entries) - before[id(kind)] - set(kind.builtins):
            if not _importable(kind.entries[name]):
                del kind.entries[name]
