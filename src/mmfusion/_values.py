"""Input checks on plain Python and NumPy values, importable without PyTorch.

Every check raises :class:`TypeError` or :class:`ValueError` with a message that names the argument,
what was expected and what came. :mod:`mmfusion._checks` adds the tensor checks on top; modules that
must work without PyTorch (:mod:`mmfusion.onnx_predictor`, the SWE scale reading) import from here.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Iterable, Sequence

import numpy as np


def check_size(size: object, name: str) -> tuple[int, int]:
    """``(H, W)`` from an int or a pair of ints (Python or NumPy integers, not bools).

    Raises:
        TypeError: ``size`` is neither; the message names ``name``.
        ValueError: A side is not positive.
    """
    if is_int(size):
        hw = (int(size), int(size))  # type: ignore[call-overload]
    elif isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 2 and all(
        is_int(v) for v in size
    ):
        hw = (int(size[0]), int(size[1]))
    else:
        raise TypeError(f"{name}: expected an int or (H, W) ints, got {size!r}")
    if min(hw) < 1:
        raise ValueError(f"{name}: expected positive sizes, got {size!r}")
    return hw


def check_positive(value: object, name: str, unit: str = "number") -> float:
    """``value`` as a positive finite float (an int or float, not a bool or a string).

    Raises:
        ValueError: ``value`` is anything else; the message names ``name`` and ``unit``.
    """
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if not (ok and np.isfinite(value) and value > 0):  # type: ignore[operator]
        raise ValueError(f"{name}: expected a positive {unit}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 80, 80, 40
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 8
_SHORT.maxlevel = 3


def short_repr(value: object) -> str:
    """``repr(value)`` cut to a readable length (long strings, deep or long lists are elided)."""
    return _SHORT.repr(value)


def is_int(value: object) -> bool:
    """True for a Python or NumPy integer that is not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """True for a Python or NumPy int or float that is not a bool."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _bounds(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False) -> str:
    """`` >= low and <= high`` (with a leading space), or ``""`` without bounds."""
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high}")
    return " " + " and ".join(parts) if parts else ""


def _finite_float(value: object) -> float | None:
    """``value`` as a float if it is a finite int or float (not a bool), else ``None``."""
    if not is_number(value):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:  # an int beyond the float range
        return None
    return number if math.isfinite(number) else None


def check_int(value: object, name: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (a Python or NumPy integer, not a bool or a float).

    Raises:
        ValueError: Anything else; the message names ``name``, the range and what came.
    """
    if not (is_int(value) and (low is None or value >= low) and (high is None or value <= high)):
        raise ValueError(f"{name}: expected an int{_bounds(low, high)}, got {short_repr(value)}")
    return int(value)  # type: ignore[call-overload]


def check_number(
    value: object,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the given range (an int or a float, not a bool or a string).

    Args:
        value: The value to check.
        name: The argument name used in the error message.
        low: Lower bound, or ``None``.
        high: Upper bound, or ``None``.
        low_open: Exclude ``low`` itself.
        high_open: Exclude ``high`` itself.

    Raises:
        ValueError: Anything else; the message names ``name``, the range and what came.
    """
    number = _finite_float(value)
    ok = number is not None
    if ok and low is not None:
        ok = number > low if low_open else number >= low  # type: ignore[operator]
    if ok and high is not None:
        ok = number < high if high_open else number <= high  # type: ignore[operator]
    if not ok:
        bounds = _bounds(low, high, low_open, high_open)
        what = f"{bounds.strip()} (a finite number)" if bounds else "a finite number"
        raise ValueError(f"{name}: expected {what}, got {short_repr(value)}")
    return number  # type: ignore[return-value]


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of the strings ``choices``.

    Raises:
        ValueError: Anything else (unhashable values included); the message lists the choices.
    """
    if not (isinstance(value, str) and value in choices):
        listed = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
        raise ValueError(f"{name}: expected {listed}, got {short_repr(value)}")
    return value


def check_sequence(value: object, name: str, what: str) -> tuple:
    """``value`` as a tuple if it is a list or a tuple (not a string, a mapping or a scalar).

    Raises:
        ValueError: Anything else; the message names ``name`` and ``what`` was expected.
    """
    if not isinstance(value, list | tuple):
        raise ValueError(f"{name}: expected {what}, got {short_repr(value)}")
    return tuple(value)


def check_modality_keys(
    given: Iterable[str],
    known: Iterable[str],
    name: str,
    *,
    require_all: bool = False,
    require_any: bool = True,
) -> None:
    """Check the modality names of a mapping against the names a module knows.

    Args:
        given: The keys that came.
        known: The modality names the module was built for, in their fixed order.
        name: The argument name used in the error message.
        require_all: Every known modality must be present.
        require_any: At least one known modality must be present.

    Raises:
        ValueError: An unknown name came, or required names are missing.
    """
    given_list, known_list = list(given), list(known)
    unknown = [k for k in given_list if k not in known_list]
    if unknown:
        raise ValueError(
            f"{name}: unknown modality name(s) {unknown}; expected names from {known_list}"
        )
    if require_all:
        missing = [k for k in known_list if k not in given_list]
        if missing:
            raise ValueError(
                f"{name}: missing modality name(s) {missing}; expected all of {known_list}, "
                f"got {given_list}"
            )
    if require_any and not given_list:
        raise ValueError(f"{name}: expected at least one of the modalities {known_list}, got none")
