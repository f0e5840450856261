"""Fibrosis stages (METAVIR F0-F4) and how they are written (paper section II.B).

The paper grades liver fibrosis in five stages, F0 (none) to F4 (cirrhosis). Manifests may write a
stage as ``"F2"``/``"f2"`` or as the bare integer ``"2"``; internally a stage is the integer label
0-4 that the classifier predicts.
"""

from __future__ import annotations

STAGE_NAMES: tuple[str, ...] = ("F0", "F1", "F2", "F3", "F4")
"""Stage names, index = integer label."""

NUM_STAGES: int = len(STAGE_NAMES)


def parse_stage(value: object) -> int:
    """Parse a fibrosis stage written as ``F0`` to ``F4`` (any case) or ``0`` to ``4``.

    Args:
        value: The stage as read from a manifest (``str``) or an ``int``.

    Returns:
        The integer label in ``0..4``.

    Raises:
        ValueError: If ``value`` is not a known stage; the message shows the value.
    """
    if isinstance(value, bool):
        raise ValueError(f"stage: expected F0..F4 or 0..4, got {value!r}")
    if isinstance(value, int):
        if 0 <= value < NUM_STAGES:
            return value
        raise ValueError(f"stage: expected F0..F4 or 0..4, got {value!r}")
    if not isinstance(value, str):
        raise ValueError(f"stage: expected F0..F4 or 0..4, got {type(value).__name__} {value!r}")
    text = value.strip().upper()
    if text.startswith("F"):
        text = text[1:]
    if text.isdigit() and 0 <= int(text) < NUM_STAGES and len(text) == 1:
        return int(text)
    raise ValueError(f"stage: expected F0..F4 or 0..4, got {value!r}")


def stage_name(label: int) -> str:
    """Return the name (``"F0"`` to ``"F4"``) of an integer stage label.

    Raises:
        ValueError: If ``label`` is not in ``0..4``.
    """
    return STAGE_NAMES[parse_stage(int(label))]
