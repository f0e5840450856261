"""The manifest column that gives the top of each SWE frame's colour scale in kPa.

An SWE frame's legend shows the colours of its scale but the numbers are text (the scanner's
setting: 40, 60, 70 kPa ...), so the top of the scale comes from the manifest, in the
:data:`SWE_SCALE_COLUMN` column. :func:`~mmfusion.data.read_manifest` knows no column names; pass
the parser to check the column when the manifest is read (every bad cell is a problem naming its
line)::

    manifest = read_manifest(csv, columns={SWE_SCALE_COLUMN: parse_swe_scale_kpa})
    swe_scale_kpa(manifest[0])  # 70.0, or None where the cell is empty

The :class:`SWEBoxCrop("box_kpa") <mmfusion.elastography.SWEBoxCrop>` crop and the liver
baselines read it with :func:`swe_scale_kpa`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmfusion.data.manifest import ManifestRow

__all__ = ["SWE_SCALE_COLUMN", "parse_swe_scale_kpa", "swe_scale_kpa"]

SWE_SCALE_COLUMN = "swe_scale_kpa"
"""Optional manifest column: the top of the row's SWE colour scale in kPa (the legend's upper
label)."""


def parse_swe_scale_kpa(text: str) -> float:
    """One cell of the :data:`SWE_SCALE_COLUMN` column as a number of kPa.

    For ``read_manifest(columns={SWE_SCALE_COLUMN: parse_swe_scale_kpa})``.

    Args:
        text: The cell's text (surrounding spaces allowed).

    Returns:
        The positive finite number it holds.

    Raises:
        ValueError: ``text`` is not a positive finite number (``"-3"``, ``"0"``, ``"forty"``,
            ``"nan"``, ``"inf"``).

    Example:
        >>> parse_swe_scale_kpa(" 70 ")
        70.0
    """
    try:
        value = float(str(text).strip())
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"expected a positive number of kPa, got {text!r}")
    return value


def swe_scale_kpa(row: ManifestRow) -> float | None:
    """The top of ``row``'s SWE colour scale in kPa, or None where the column is absent or empty.

    Reads the value :func:`~mmfusion.data.read_manifest` parsed with :func:`parse_swe_scale_kpa`
    (``row.values``), else parses the raw cell (``row.extra``, e.g. for a row built in code).

    Args:
        row: A manifest row.

    Returns:
        The number of kPa, or None.

    Raises:
        ValueError: The raw cell is not a positive number of kPa (the message names the line).
    """
    values = getattr(row, "values", None) or {}
    if SWE_SCALE_COLUMN in values:
        value = values[SWE_SCALE_COLUMN]
        return None if value is None else float(value)
    text = str(row.extra.get(SWE_SCALE_COLUMN, "")).strip()
    if not text:
        return None
    try:
        return parse_swe_scale_kpa(text)
    except ValueError as err:
        raise ValueError(f"{SWE_SCALE_COLUMN}: manifest line {row.line}: {err}") from None
