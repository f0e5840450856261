"""Validate once: a public entry point checks its inputs, the layers it calls do not check again.

A container (:class:`~mmfusion.nn.MultiModalClassifier`, a fusion module, the ensemble head)
checks its inputs when it is called from outside, then runs its children inside
:class:`validated`; a layer consults :func:`checking` and skips the checks of its own inputs while
it runs inside a container that has already checked them. Called directly, every module still
checks its inputs. The state is per thread (a ``threading.local`` counter), so a direct call in
one thread is checked while a model runs in another; ``torch.compile(fullgraph=True)`` and
``torch.export`` trace it without a graph break.
"""

from __future__ import annotations

import threading
from types import TracebackType

_STATE = threading.local()


def checking() -> bool:
    """True unless the caller runs inside :class:`validated` (its inputs were checked upstream)."""
    return getattr(_STATE, "depth", 0) == 0


class validated:  # lower case: used like a function, ``with validated(): ...``
    """Context in which the layers called skip the checks of their inputs (nests; per thread)."""

    def __enter__(self) -> None:
        _STATE.depth = getattr(_STATE, "depth", 0) + 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _STATE.depth -= 1
