"""The clinician's baseline: fibrosis stage from liver stiffness by published 2D-SWE cut-offs.

A hepatologist reading a 2D-SWE exam does not classify images: they take the median stiffness of
the measurement box (kPa) and compare it with cut-offs for significant fibrosis (F>=2), advanced
fibrosis (F>=3) and cirrhosis (F4). Any model of the paper has to beat this rule to be useful
(docs/paper_map.rst "Decisions").

Default cut-offs, :data:`HERRMANN_2018`: the individual patient data meta-analysis of 2D-SWE
(SuperSonic Imagine Aixplorer) by Herrmann E, de Ledinghen V, Cassinotto C, et al., "Assessment of
biopsy-proven liver fibrosis by two-dimensional shear wave elastography: an individual patient
data-based meta-analysis", Hepatology 2018;67(1):260-272, doi:10.1002/hep.29179 (1,134 patients
from 13 centres with 2D-SWE and biopsy; mostly hepatitis C, hepatitis B and NAFLD). The values,
7.1 kPa (F>=2), 8.7 kPa (F>=3) and 10.4 kPa (F4), are the all-aetiology cut-offs as the study is
usually quoted; the study's identity, cohort and AUROCs were checked against its abstract, the
three values could not be checked against its full text here (no access): confirm them in the
paper before any clinical reading. They agree with the ranges in docs/paper_map.rst (F>=2 about 7.1-8.0 kPa,
F4 about 10.4-11.1 kPa). Aetiology-specific cut-offs differ; pass your own :class:`SweCutoffs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, overload

import numpy as np

__all__ = ["HERRMANN_2018", "SweCutoffs", "stage_from_kpa"]


@dataclass(frozen=True)
class SweCutoffs:
    """Liver-stiffness cut-offs (kPa) of the three clinical questions.

    A stiffness at or above a cut-off answers its question with yes.

    Attributes:
        f2: Cut-off for significant fibrosis, F>=2.
        f3: Cut-off for advanced fibrosis, F>=3.
        f4: Cut-off for cirrhosis, F4.
        source: Where the values come from (a citation).
    """

    f2: float
    f3: float
    f4: float
    source: str = ""

    def __post_init__(self) -> None:
        values = (self.f2, self.f3, self.f4)
        if not all(np.isfinite(v) and v > 0 for v in values) or not self.f2 < self.f3 < self.f4:
            raise ValueError(
                f"f2, f3, f4: expected positive cut-offs with f2 < f3 < f4 (kPa), got {values}"
            )


#: Herrmann et al., Hepatology 2018, doi:10.1002/hep.29179, all aetiologies (see the module text).
HERRMANN_2018 = SweCutoffs(
    f2=7.1,
    f3=8.7,
    f4=10.4,
    source="Herrmann et al., Hepatology 2018;67(1):260-272, doi:10.1002/hep.29179",
)


@overload
def stage_from_kpa(median_kpa: float, cutoffs: SweCutoffs = ..., below_f2: int = ...) -> int: ...


@overload
def stage_from_kpa(
    median_kpa: np.ndarray, cutoffs: SweCutoffs = ..., below_f2: int = ...
) -> np.ndarray: ...


def stage_from_kpa(
    median_kpa: Any, cutoffs: SweCutoffs = HERRMANN_2018, below_f2: int = 1
) -> int | np.ndarray:
    """METAVIR stage 0..4 from median liver stiffness by cut-offs.

    Rule: ``kpa >= f4`` -> 4 (F4); ``f3 <= kpa < f4`` -> 3; ``f2 <= kpa < f3`` -> 2; below ``f2``
    -> ``below_f2``. The three published cut-offs cannot separate F0 from F1, so everything below
    the F>=2 cut-off gets one stage, F1 by default: F1 is the more frequent of the two in the
    paper's cohort (287 vs 162 pairs, II.B), so it is the more often right guess; pass
    ``below_f2=0`` to call it F0.

    Args:
        median_kpa: Median stiffness in kPa, a number or an array of any shape (e.g. one value per
            image pair, see :func:`mmfusion.elastography.decode_swe_kpa`).
        cutoffs: The cut-offs; default :data:`HERRMANN_2018`.
        below_f2: Stage given below the F>=2 cut-off: 0 or 1.

    Returns:
        An ``int`` for a number, else an int64 array of the same shape.

    Raises:
        TypeError: ``cutoffs`` is not a :class:`SweCutoffs`.
        ValueError: A stiffness is NaN, infinite or negative, or ``below_f2`` is not 0 or 1.

    Example:
        >>> stage_from_kpa(9.0)
        3
        >>> stage_from_kpa(np.array([5.0, 7.1, 12.0]), below_f2=0).tolist()
        [0, 2, 4]
    """
    if not isinstance(cutoffs, SweCutoffs):
        raise TypeError(f"cutoffs: expected SweCutoffs, got {type(cutoffs).__name__}")
    if below_f2 not in (0, 1) or isinstance(below_f2, bool):
        raise ValueError(f"below_f2: expected 0 (F0) or 1 (F1), got {below_f2!r}")
    kpa = np.asarray(median_kpa, dtype=np.float64)
    bad = ~np.isfinite(kpa) | (kpa < 0)
    if bad.any():
        raise ValueError(
            f"median_kpa: expected finite stiffness >= 0 kPa, got {int(bad.sum())} value(s) that "
            f"are not, e.g. {kpa[bad].flat[0]!r}"
        )
    edges = np.array([cutoffs.f2, cutoffs.f3, cutoffs.f4])
    stage = np.searchsorted(edges, kpa, side="right") + 1
    stage = np.where(stage == 1, below_f2, stage).astype(np.int64)
    return int(stage) if stage.ndim == 0 else stage
