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

Serum scores (:class:`ScoreCutoffs`, the scores in :mod:`mmfusion.liver.labs`). Each has a lower
cut-off that rules a question out and an upper one that rules it in; between them the score is
indeterminate (a "grey zone" sent on to elastography or biopsy):

- :data:`FIB4_CUTOFFS`, 1.30 / 2.67 for advanced fibrosis (F>=3): Shah AG, Lydecker A, Murray K,
  et al., "Comparison of noninvasive markers of fibrosis in patients with nonalcoholic fatty liver
  disease", Clin Gastroenterol Hepatol 2009;7(10):1104-1112, doi:10.1016/j.cgh.2009.05.033 (541
  NAFLD patients; < 1.30 excludes advanced fibrosis with a negative predictive value of about 90 %,
  > 2.67 a positive predictive value of about 80 %), the pair today's NAFLD guidance uses. NOT the
  derivation's cut-offs: Sterling RK, Lissen E, Clumeck N, et al., Hepatology 2006;43(6):1317-1325,
  doi:10.1002/hep.21178 (832 HIV/HCV patients) proposed < 1.45 (NPV 90 %) and > 3.25 (specificity
  97 %) for Ishak 4-6 (checked against its abstract); pass those as
  ``ScoreCutoffs(1.45, 3.25, "f3plus", ...)`` for a viral-hepatitis reading.
- :data:`APRI_CUTOFFS`, 0.5 / 1.5 for significant fibrosis (F>=2), and
  :data:`APRI_CIRRHOSIS_CUTOFFS`, 1.0 / 2.0 for cirrhosis (F4): Wai CT, Greenson JK, Fontana RJ,
  et al., "A simple noninvasive index can predict both significant fibrosis and cirrhosis in
  patients with chronic hepatitis C", Hepatology 2003;38(2):518-526, doi:10.1053/jhep.2003.50346
  (270 HCV patients; Ishak >= 3 as significant fibrosis). The four values are the ones the
  meta-analyses evaluate (e.g. Jin et al., BMC Gastroenterol 2012;12:14, doi:10.1186/1471-230X-12-14:
  0.5 sensitive 84 % / specific 41 %, 1.5 sensitive 49 % / specific 84 % for F>=2 in hepatitis B;
  checked against its abstract). APRI's upper limit of normal of AST is 40 U/L here
  (:func:`mmfusion.liver.labs.apri`).

Wai's and Sterling's values could not be checked against their full texts here (abstracts and
later meta-analyses only); Shah's are those the guidance tables quote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, overload

import numpy as np

__all__ = [
    "APRI_CIRRHOSIS_CUTOFFS",
    "APRI_CUTOFFS",
    "FIB4_CUTOFFS",
    "HERRMANN_2018",
    "ScoreCutoffs",
    "SweCutoffs",
    "score_band",
    "stage_from_kpa",
]


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


@dataclass(frozen=True)
class ScoreCutoffs:
    """Rule-out / rule-in cut-offs of a serum fibrosis score for one clinical question.

    A score below ``low`` answers the question with no, above ``high`` with yes; from ``low`` to
    ``high`` (both included) it is indeterminate.

    Attributes:
        low: Rule-out cut-off.
        high: Rule-in cut-off.
        question: The stage question the cut-offs answer, a key of ``METAVIR.cutoffs``:
            ``"f2plus"`` (F>=2), ``"f3plus"`` (F>=3) or ``"f4"`` (F4).
        source: Where the values come from (a citation).
    """

    low: float
    high: float
    question: str
    source: str = ""

    def __post_init__(self) -> None:
        if not (np.isfinite(self.low) and np.isfinite(self.high) and 0 < self.low < self.high):
            raise ValueError(
                f"low, high: expected positive cut-offs with low < high, got {(self.low, self.high)}"
            )
        if self.question not in _QUESTIONS:
            raise ValueError(f"question: expected one of {sorted(_QUESTIONS)}, got {self.question!r}")

    @property
    def min_stage(self) -> int:
        """The lowest stage for which the question's answer is yes (2, 3 or 4)."""
        return _QUESTIONS[self.question]


_QUESTIONS = {"f2plus": 2, "f3plus": 3, "f4": 4}

#: FIB-4 for advanced fibrosis (F>=3), Shah et al. 2009 (see the module text).
FIB4_CUTOFFS = ScoreCutoffs(
    low=1.30,
    high=2.67,
    question="f3plus",
    source="Shah et al., Clin Gastroenterol Hepatol 2009;7(10):1104-1112, doi:10.1016/j.cgh.2009.05.033",
)

#: APRI for significant fibrosis (F>=2), Wai et al. 2003 (see the module text).
APRI_CUTOFFS = ScoreCutoffs(
    low=0.5,
    high=1.5,
    question="f2plus",
    source="Wai et al., Hepatology 2003;38(2):518-526, doi:10.1053/jhep.2003.50346",
)

#: APRI for cirrhosis (F4), Wai et al. 2003 (see the module text).
APRI_CIRRHOSIS_CUTOFFS = ScoreCutoffs(
    low=1.0,
    high=2.0,
    question="f4",
    source="Wai et al., Hepatology 2003;38(2):518-526, doi:10.1053/jhep.2003.50346",
)


def score_band(score: Any, cutoffs: ScoreCutoffs) -> np.ndarray:
    """Band of each score: 0 below ``low`` (ruled out), 1 indeterminate, 2 above ``high`` (ruled in).

    Args:
        score: Scores (FIB-4 or APRI), any shape; NaN (no labs) allowed.
        cutoffs: The question's cut-offs.

    Returns:
        int64 array of the shape of ``score``: 0, 1 or 2, and -1 where the score is NaN.

    Raises:
        TypeError: ``cutoffs`` is not a :class:`ScoreCutoffs`.
        ValueError: A score is negative or infinite.

    Example:
        >>> score_band(np.array([1.0, 1.30, 2.0, 2.67, 3.0, np.nan]), FIB4_CUTOFFS).tolist()
        [0, 1, 1, 1, 2, -1]
    """
    if not isinstance(cutoffs, ScoreCutoffs):
        raise TypeError(f"cutoffs: expected ScoreCutoffs, got {type(cutoffs).__name__}")
    x = np.asarray(score, dtype=np.float64)
    nan = np.isnan(x)
    bad = ~nan & (~np.isfinite(x) | (x < 0))
    if bad.any():
        raise ValueError(
            f"score: expected finite scores >= 0 (NaN for none), got {int(bad.sum())} value(s) "
            f"that are not, e.g. {x[bad].flat[0]!r}"
        )
    band = np.where(x < cutoffs.low, 0, np.where(x > cutoffs.high, 2, 1))
    return np.where(nan, -1, band).astype(np.int64)
