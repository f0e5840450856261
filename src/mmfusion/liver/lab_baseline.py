"""The serum-score baseline: FIB-4 and APRI read with their published cut-offs.

The third baseline beside the SWE cut-offs (:mod:`mmfusion.liver.cutoffs`) and the logistic
regression on image statistics (:mod:`mmfusion.liver.baseline`): what a hepatologist concludes from
the routine blood tests alone, with nothing fitted.

Two readings, because the cut-offs were made for binary questions, not for five stages:

1. :func:`cutoff_readouts`, what the cut-offs were made for and what a clinician expects to see:
   per question (FIB-4 for F>=3; APRI for F>=2 and for F4) the share ruled out, indeterminate and
   ruled in, the sensitivity and negative predictive value of the rule-out cut-off and the
   specificity and positive predictive value of the rule-in one; plus :func:`score_aurocs`, the
   AUROC of each continuous score for F>=2, F>=3 and F4 (how the scores are compared in the
   literature, e.g. Lin et al., Hepatology 2011;53(3):726-736).
2. :class:`LabCutoffBaseline`, a five-stage classifier so that the baseline has a row in a table of
   five-stage models (accuracy, macro AUC, QWK, ECE): each of the three questions' bands allows a
   set of stages (FIB-4 < 1.30: F0-F2, > 2.67: F3-F4; APRI < 0.5: F0-F1, > 1.5: F2-F4; APRI < 1.0:
   F0-F3, > 2.0: F4; an indeterminate band allows all five); the stages allowed by all three get
   the class prior renormalised over them (the rule says "one of these", the prior says which is
   more common), the others probability 0, and the prediction is the most probable. With the
   paper's prior (162:287:284:197:94, II.B) that reads: F1 when F0-F2, F0-F1, F0-F3 or nothing is
   known; F2 when F2-F4 (or an intersection such as F2 or F2-F3); F3 when F3-F4 or F3; F4 when
   F4. Conflicting bands (e.g. FIB-4 < 1.30 and APRI
   > 2.0: no stage allowed by all three) and patients without labs get the prior itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from mmfusion.liver.cutoffs import (
    APRI_CIRRHOSIS_CUTOFFS,
    APRI_CUTOFFS,
    FIB4_CUTOFFS,
    ScoreCutoffs,
    score_band,
)
from mmfusion.liver.labs import LAB_COLUMNS, apri, fib4
from mmfusion.liver.stages import METAVIR, NUM_STAGES

__all__ = [
    "PAPER_PRIOR",
    "LabCutoffBaseline",
    "cutoff_readouts",
    "evaluate_lab_baseline",
    "lab_scores",
    "score_aurocs",
]

#: Stage counts of the paper's cohort, F0..F4 (section II.B), the default class prior.
PAPER_PRIOR: tuple[float, ...] = (162.0, 287.0, 284.0, 197.0, 94.0)


def _values(values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    missing = [c for c in LAB_COLUMNS if c not in values]
    if missing:
        raise ValueError(f"values: expected the columns {list(LAB_COLUMNS)}, missing {missing}")
    cols = {c: np.asarray(values[c], dtype=np.float64).reshape(-1) for c in LAB_COLUMNS}
    if len({len(v) for v in cols.values()}) != 1:
        raise ValueError(
            f"values: expected columns of one length, got { {c: len(v) for c, v in cols.items()} }"
        )
    return cols


def lab_scores(values: Mapping[str, Any], ast_uln: float = 40.0) -> dict[str, np.ndarray]:
    """FIB-4 and APRI of each patient (NaN without labs).

    Args:
        values: ``{column: [N]}`` for :data:`~mmfusion.liver.labs.LAB_COLUMNS`.
        ast_uln: Upper limit of normal of AST for APRI (U/L).

    Returns:
        ``{"fib4": [N], "apri": [N]}`` float64.
    """
    v = _values(values)
    return {
        "fib4": np.asarray(fib4(v["age"], v["ast"], v["alt"], v["platelets"]), dtype=np.float64),
        "apri": np.asarray(apri(v["ast"], v["platelets"], ast_uln), dtype=np.float64),
    }


def _stages(stages: Any, n: int) -> np.ndarray:
    s = np.asarray(stages)
    if s.shape != (n,) or not np.issubdtype(s.dtype, np.integer) or (
        n and (s.min() < 0 or s.max() >= NUM_STAGES)
    ):
        raise ValueError(
            f"stages: expected {n} int stages 0..{NUM_STAGES - 1}, got shape {s.shape} dtype {s.dtype}"
        )
    return s.astype(np.int64)


def _allowed(band: np.ndarray, cutoffs: ScoreCutoffs) -> np.ndarray:
    """``[N, 5]`` bool: the stages a band allows (0: below min_stage, 2: from it, else all)."""
    positive = np.arange(NUM_STAGES) >= cutoffs.min_stage
    out = np.ones((len(band), NUM_STAGES), dtype=bool)
    out[band == 0] = ~positive
    out[band == 2] = positive
    return out


class LabCutoffBaseline:
    """Five-stage reading of the FIB-4 and APRI cut-offs (module text); nothing is fitted.

    Args:
        prior: Relative stage frequencies F0..F4 used inside the allowed set; default
            :data:`PAPER_PRIOR` (the phantom's cohort prior).
        fib4_cutoffs: FIB-4's cut-offs (default :data:`~mmfusion.liver.cutoffs.FIB4_CUTOFFS`).
        apri_cutoffs: APRI's significant-fibrosis cut-offs
            (:data:`~mmfusion.liver.cutoffs.APRI_CUTOFFS`).
        apri_cirrhosis_cutoffs: APRI's cirrhosis cut-offs
            (:data:`~mmfusion.liver.cutoffs.APRI_CIRRHOSIS_CUTOFFS`).
        ast_uln: Upper limit of normal of AST for APRI (U/L).

    Example:
        >>> base = LabCutoffBaseline()
        >>> labs = {"age": [35.0, 60.0], "ast": [25.0, 90.0], "alt": [30.0, 60.0],
        ...         "platelets": [250.0, 100.0]}  # FIB-4 0.64, APRI 0.25; FIB-4 7.0, APRI 2.25
        >>> base.predict(labs).tolist()
        [1, 4]
    """

    def __init__(
        self,
        prior: Sequence[float] = PAPER_PRIOR,
        *,
        fib4_cutoffs: ScoreCutoffs = FIB4_CUTOFFS,
        apri_cutoffs: ScoreCutoffs = APRI_CUTOFFS,
        apri_cirrhosis_cutoffs: ScoreCutoffs = APRI_CIRRHOSIS_CUTOFFS,
        ast_uln: float = 40.0,
    ) -> None:
        p = np.asarray(prior, dtype=np.float64)
        if p.shape != (NUM_STAGES,) or not np.all(np.isfinite(p)) or np.any(p <= 0):
            raise ValueError(f"prior: expected {NUM_STAGES} positive numbers, got {prior!r}")
        for name, c in (("fib4_cutoffs", fib4_cutoffs), ("apri_cutoffs", apri_cutoffs),
                        ("apri_cirrhosis_cutoffs", apri_cirrhosis_cutoffs)):
            if not isinstance(c, ScoreCutoffs):
                raise TypeError(f"{name}: expected ScoreCutoffs, got {type(c).__name__}")
        self.prior = p / p.sum()
        self.fib4_cutoffs = fib4_cutoffs
        self.apri_cutoffs = apri_cutoffs
        self.apri_cirrhosis_cutoffs = apri_cirrhosis_cutoffs
        self.ast_uln = float(ast_uln)

    def allowed(self, values: Mapping[str, Any]) -> np.ndarray:
        """``[N, 5]`` bool: the stages all three questions' bands allow (all for a patient
        without labs; none for conflicting bands)."""
        scores = lab_scores(values, self.ast_uln)
        return (
            _allowed(score_band(scores["fib4"], self.fib4_cutoffs), self.fib4_cutoffs)
            & _allowed(score_band(scores["apri"], self.apri_cutoffs), self.apri_cutoffs)
            & _allowed(
                score_band(scores["apri"], self.apri_cirrhosis_cutoffs),
                self.apri_cirrhosis_cutoffs,
            )
        )

    def predict_proba(self, values: Mapping[str, Any]) -> np.ndarray:
        """``[N, 5]`` probabilities: the prior over the allowed stages (the prior itself where
        none is allowed); rows sum to 1."""
        allowed = self.allowed(values)
        allowed[~allowed.any(axis=1)] = True
        probs = allowed * self.prior
        return probs / probs.sum(axis=1, keepdims=True)

    def predict(self, values: Mapping[str, Any]) -> np.ndarray:
        """``[N]`` int64 stages (arg-max of :meth:`predict_proba`)."""
        return self.predict_proba(values).argmax(axis=1).astype(np.int64)


def _share(mask: np.ndarray) -> float | None:
    return float(mask.mean()) if mask.size else None


def cutoff_readouts(
    values: Mapping[str, Any],
    stages: Any,
    *,
    questions: Mapping[str, tuple[str, ScoreCutoffs]] | None = None,
    ast_uln: float = 40.0,
) -> dict[str, dict[str, Any]]:
    """What each score's cut-offs say about its question, on the patients with labs.

    Args:
        values: ``{column: [N]}`` lab values (NaN rows: patients without labs, left out).
        stages: ``[N]`` true stages 0..4.
        questions: Name -> (score ``"fib4"`` or ``"apri"``, cut-offs); default FIB-4 for F>=3
            (``"fib4_f3plus"``), APRI for F>=2 (``"apri_f2plus"``) and APRI for F4
            (``"apri_f4"``).
        ast_uln: Upper limit of normal of AST for APRI (U/L).

    Returns:
        Per question: ``n`` (patients with labs), ``prevalence``, ``ruled_out``,
        ``indeterminate``, ``ruled_in`` (shares), ``sensitivity_low`` (share of positives at or
        above the low cut-off), ``npv_low`` (share of negatives among those below it),
        ``specificity_high`` (share of negatives at or below the high cut-off), ``ppv_high``
        (share of positives among those above it), ``accuracy_determinate`` (right among those
        ruled in or out); a share over no patient is None.
    """
    scores = lab_scores(values, ast_uln)
    s = _stages(stages, len(scores["fib4"]))
    questions = questions or {
        "fib4_f3plus": ("fib4", FIB4_CUTOFFS),
        "apri_f2plus": ("apri", APRI_CUTOFFS),
        "apri_f4": ("apri", APRI_CIRRHOSIS_CUTOFFS),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, (score, cutoffs) in questions.items():
        if score not in scores:
            raise ValueError(f"questions[{name!r}]: expected score 'fib4' or 'apri', got {score!r}")
        band = score_band(scores[score], cutoffs)
        keep = band >= 0
        band, y = band[keep], s[keep] >= cutoffs.min_stage
        determinate = band != 1
        out[name] = {
            "score": score,
            "low": cutoffs.low,
            "high": cutoffs.high,
            "question": cutoffs.question,
            "n": int(keep.sum()),
            "prevalence": _share(y),
            "ruled_out": _share(band == 0),
            "indeterminate": _share(band == 1),
            "ruled_in": _share(band == 2),
            "sensitivity_low": _share(band[y] >= 1),
            "npv_low": _share(~y[band == 0]),
            "specificity_high": _share(band[~y] <= 1),
            "ppv_high": _share(y[band == 2]),
            "accuracy_determinate": _share((band[determinate] == 2) == y[determinate]),
        }
    return out


def score_aurocs(
    values: Mapping[str, Any], stages: Any, ast_uln: float = 40.0
) -> dict[str, dict[str, float | None]]:
    """AUROC of each continuous score for F>=2, F>=3 and F4 (patients with labs).

    Returns:
        ``{"fib4": {"f2plus": a, "f3plus": a, "f4": a}, "apri": {...}}`` (None where a question
        has only one class among the patients).
    """
    scores = lab_scores(values, ast_uln)
    s = _stages(stages, len(scores["fib4"]))
    out: dict[str, dict[str, float | None]] = {}
    for name, x in scores.items():
        keep = ~np.isnan(x)
        out[name] = {}
        for key, c in METAVIR.cutoffs.items():
            y = s[keep] >= c
            out[name][key] = float(roc_auc_score(y, x[keep])) if 0 < y.sum() < y.size else None
    return out


def evaluate_lab_baseline(
    values: Mapping[str, Any],
    stages: Any,
    *,
    baseline: LabCutoffBaseline | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The lab baseline on a set of patients (one row per patient).

    Args:
        values: ``{column: [N]}`` lab values, NaN for patients without labs.
        stages: ``[N]`` true stages.
        baseline: The five-stage reading; default ``LabCutoffBaseline()``.
        n_bootstrap: Bootstrap resamples of the five-stage report (0: no intervals).
        seed: Seed of the bootstrap.

    Returns:
        ``{"n", "n_with_labs", "readouts": cutoff_readouts(...), "aurocs": score_aurocs(...),
        "five_stage": classification_report(...) on all patients (those without labs get the
        prior), "five_stage_with_labs": the same on the patients with labs}``.
    """
    from mmfusion.metrics import classification_report

    baseline = baseline or LabCutoffBaseline()
    v = _values(values)
    s = _stages(stages, len(v["age"]))
    probs = baseline.predict_proba(v)
    has = ~np.isnan(np.column_stack([v[c] for c in LAB_COLUMNS])).any(axis=1)

    def report(mask: np.ndarray) -> dict[str, Any]:
        return classification_report(
            probs[mask], s[mask], num_classes=NUM_STAGES, label_spec=METAVIR,
            n_bootstrap=n_bootstrap, seed=seed,
        )

    return {
        "n": int(len(s)),
        "n_with_labs": int(has.sum()),
        "readouts": cutoff_readouts(v, s, ast_uln=baseline.ast_uln),
        "aurocs": score_aurocs(v, s, baseline.ast_uln),
        "five_stage": report(np.ones(len(s), dtype=bool)),
        "five_stage_with_labs": report(has),
    }
