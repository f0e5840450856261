"""Fibrosis stages (METAVIR F0-F4) and how they are written (paper section II.B).

The paper grades liver fibrosis in five stages, F0 (none) to F4 (cirrhosis). A liver manifest
holds the stage in its ``stage`` column, written ``"F2"``/``"f2"`` or as the bare integer ``"2"``;
internally a stage is the integer label 0-4 that the classifier predicts. :data:`METAVIR` is that
vocabulary as a :class:`~mmfusion.labels.LabelSpec` (pass it as ``read_manifest(...,
labels=METAVIR)``), with the three binary questions a hepatologist asks, F>=2 (significant
fibrosis), F>=3 (advanced) and F4 (cirrhosis), as its cut-offs: the metrics report them as
``auc_f2plus``, ``auc_f3plus`` and ``auc_f4``. :data:`STAGE_NAMES`, :data:`NUM_STAGES`,
:func:`parse_stage` and :func:`stage_name` are views of it.
"""

from __future__ import annotations

from mmfusion.labels import LabelSpec

__all__ = ["METAVIR", "NUM_STAGES", "STAGE_NAMES", "parse_stage", "stage_name"]

METAVIR = LabelSpec(
    names=("F0", "F1", "F2", "F3", "F4"),
    column="stage",
    aliases={str(i): i for i in range(5)},
    cutoffs={"f2plus": 2, "f3plus": 3, "f4": 4},
    ordinal=True,
)
"""The METAVIR fibrosis stages F0-F4 in the manifest's ``stage`` column (``F2``, ``f2`` or ``2``),
ordered, with the cut-offs F>=2 (``f2plus``), F>=3 (``f3plus``) and F4 (``f4``)."""

STAGE_NAMES: tuple[str, ...] = METAVIR.names
"""Stage names, index = integer label (``METAVIR.names``)."""

NUM_STAGES: int = METAVIR.num_classes


def parse_stage(value: object) -> int:
    """Parse a fibrosis stage written as ``F0`` to ``F4`` (any case) or ``0`` to ``4``.

    Args:
        value: The stage as read from a manifest (``str``) or an ``int``.

    Returns:
        The integer label in ``0..4``.

    Raises:
        ValueError: If ``value`` is not a known stage; the message shows the value.
    """
    try:
        return METAVIR.parse(value)  # type: ignore[arg-type]
    except ValueError:
        shown = repr(value) if isinstance(value, str | int) else f"{type(value).__name__} {value!r}"
        raise ValueError(f"stage: expected F0..F4 or 0..4, got {shown}") from None


def stage_name(label: int) -> str:
    """Return the name (``"F0"`` to ``"F4"``) of an integer stage label.

    Raises:
        ValueError: If ``label`` is not in ``0..4``.
    """
    return STAGE_NAMES[parse_stage(int(label))]
