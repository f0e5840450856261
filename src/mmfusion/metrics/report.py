"""Classification report for ordered stages (liver fibrosis F0-F4), as one JSON-ready dict.

The paper's metrics (section IV.C): accuracy, one-vs-rest macro AUROC, macro sensitivity
(eq. (4), TP / (TP + FN)), macro specificity (eq. (5), TN / (TN + FP)) and the confusion matrix.
Added, after docs/paper_map.rst, "Decisions" -> Metrics, what hepatologists read: AUROC of the
binary cut-offs F>=2 (significant fibrosis), F>=3 (advanced) and F4 (cirrhosis), the
quadratic-weighted Cohen's kappa (the stages are ordered), and bootstrap confidence intervals that
resample patients, not images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, roc_auc_score

from mmfusion.metrics._inputs import as_groups, as_labels, as_probs, default_class_names
from mmfusion.metrics.bootstrap import bootstrap_weights, percentile_interval, weighted_auroc

__all__ = ["classification_report"]

#: Named cut-off keys for five stages: report key -> lowest stage counted positive.
_NAMED_CUTOFFS = {"auc_f2plus": 2, "auc_f3plus": 3, "auc_f4": 4}


def _ratio(num: int, den: int) -> float | None:
    return float(num / den) if den > 0 else None


def _mean_defined(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """AUROC via scikit-learn; ``None`` if only one of the two classes is present."""
    if positive.all() or not positive.any():
        return None
    return float(roc_auc_score(positive, score))


def _cutoff_score(p: np.ndarray, c: int) -> np.ndarray:
    """Score of "stage >= c": summed probabilities of classes ``>= c``.

    Rounded to 12 decimals so that equal sums stay ties whatever the order of float additions.
    """
    return np.round(p[:, c:].sum(axis=1), 12)


def classification_report(
    probs: Any,
    labels: Any,
    *,
    groups: Any = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int | None = 0,
    min_valid_resamples: int | None = None,
) -> dict[str, Any]:
    """Compute the paper's metrics plus clinical cut-off AUROCs, kappa and bootstrap intervals.

    The predicted class is the arg-max of ``probs`` (ties go to the lower class index).

    Args:
        probs: ``[N, K]`` class probabilities (rows sum to 1), numpy array or torch tensor.
        labels: ``[N]`` integer true classes in ``0..K-1`` (stages are ordered: F0 < ... < F4).
        groups: Optional ``[N]`` patient ids (strings or integers). The bootstrap then resamples
            patients with replacement, each bringing all of its pairs; without groups it
            resamples samples.
        num_classes: ``K``; ``None`` takes it from ``probs`` (which must match when given).
        class_names: ``K`` unique names; default ``["0", ..., "K-1"]``.
        n_bootstrap: Number of bootstrap resamples ``B``; ``0`` skips the intervals (``ci`` is
            then ``None``).
        ci: Coverage of the percentile intervals, in ``(0, 1)``.
        seed: Seed of the resampling (``None``: fresh entropy, not reproducible).
        min_valid_resamples: Fewest resamples in which a metric is defined for its interval to
            be reported (>= 2); ``None``: ``max(20, ceil(n_bootstrap / 2))``
            (``mmfusion.metrics.bootstrap.min_valid_resamples``).

    Returns:
        A JSON-serialisable dict (plain ``float``/``int``/``str``/``list``/``dict``/``None``):

        - ``n`` (pairs), ``n_groups`` (distinct ``groups``; ``None`` without groups),
          ``num_classes``, ``class_names``.
        - ``accuracy``; ``auc_macro`` (mean one-vs-rest AUROC, IV.C) and ``auc_macro_classes``
          (names of the classes it averages); ``sensitivity_macro``, ``specificity_macro``
          (means over classes of eq. (4) and eq. (5)); ``qwk`` (quadratic-weighted Cohen's kappa).
        - ``per_class``: ``{name: {"support", "sensitivity", "specificity", "auc"}}``.
        - ``confusion_matrix``: ``K x K`` nested list of counts, rows = true class,
          columns = predicted class.
        - ``cutoff_aucs``: ``{">=c": AUROC}`` for ``c`` in ``1..K-1``: the binary problem
          "stage >= c" scored by the summed probabilities of classes ``>= c`` (rounded to 12
          decimals, so that float summation order does not break ties). For ``K == 5`` also
          ``auc_f2plus``, ``auc_f3plus``, ``auc_f4`` (= ``">=2"``, ``">=3"``, ``">=4"``).
        - ``ci``: ``None`` if ``n_bootstrap == 0``, else ``{"level", "method": "percentile",
          "unit": "patient" | "sample", "n_bootstrap", "seed", "accuracy": {"lower", "upper",
          "n_valid", "n_resamples", "min_valid", "reason"}, "auc_macro": {...}}``.

    Undefined values are ``None`` (JSON null), never NaN:

    - A class absent from ``labels`` has no sensitivity and no AUROC; a class that is every
      label has no specificity and no AUROC. The macro averages use the classes where the value
      is defined (``auc_macro_classes`` lists them); ``None`` if there is none.
    - A cut-off AUROC is ``None`` when all labels fall on one side of the cut-off.
    - ``qwk`` is ``None`` when labels and predictions all are one and the same class.
    - A bootstrap resample in which the metric is undefined is skipped: for ``auc_macro``, one
      that lacks positives or negatives for any class in ``auc_macro_classes`` (so every
      replicate averages the same classes). ``n_valid`` counts the resamples used, of
      ``n_resamples``; the bounds are ``None`` with fewer than ``min_valid`` (the few resamples
      that happen to draw a rare class are a biased selection whose percentiles can exclude the
      estimate itself), and ``reason`` then says so.

    Raises:
        ValueError: Malformed input (shapes, lengths, rows of ``probs`` not summing to 1 within
            1e-3, labels out of range, bad ``class_names``/``n_bootstrap``/``ci``/
            ``min_valid_resamples``); the message
            names the argument, what was expected and what came.
    """
    p = as_probs(probs, num_classes)
    n, k = p.shape
    y = as_labels(labels, n, k)
    names = default_class_names(class_names, k)
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)):
        raise ValueError(f"n_bootstrap: expected an int >= 0, got {n_bootstrap!r}")
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap: expected an int >= 0, got {n_bootstrap}")
    if not 0.0 < float(ci) < 1.0:
        raise ValueError(f"ci: expected a coverage in (0, 1), e.g. 0.95, got {ci!r}")
    if min_valid_resamples is not None and (
        isinstance(min_valid_resamples, bool)
        or not isinstance(min_valid_resamples, (int, np.integer))
        or min_valid_resamples < 2
    ):
        raise ValueError(
            f"min_valid_resamples: expected an int >= 2 or None, got {min_valid_resamples!r}"
        )
    if groups is None:
        group_index, n_groups = np.arange(n), n
    else:
        group_index, n_groups = as_groups(groups, n)

    pred = p.argmax(axis=1)
    cm = confusion_matrix(y, pred, labels=list(range(k)))
    per_class: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(names):
        tp = int(cm[c, c])
        fn = int(cm[c, :].sum()) - tp
        fp = int(cm[:, c].sum()) - tp
        tn = n - tp - fn - fp
        per_class[name] = {
            "support": tp + fn,
            "sensitivity": _ratio(tp, tp + fn),  # eq. (4)
            "specificity": _ratio(tn, tn + fp),  # eq. (5)
            "auc": _binary_auc(y == c, p[:, c]),  # one-vs-rest, IV.C
        }
    auc_classes = [c for c, name in enumerate(names) if per_class[name]["auc"] is not None]
    qwk: float | None = None
    if np.unique(np.concatenate([y, pred])).size > 1:
        qwk = float(cohen_kappa_score(y, pred, labels=list(range(k)), weights="quadratic"))

    report: dict[str, Any] = {
        "n": n,
        "n_groups": None if groups is None else n_groups,
        "num_classes": k,
        "class_names": names,
        "accuracy": float(accuracy_score(y, pred)),
        "auc_macro": _mean_defined([per_class[names[c]]["auc"] for c in auc_classes]),
        "auc_macro_classes": [names[c] for c in auc_classes],
        "sensitivity_macro": _mean_defined([v["sensitivity"] for v in per_class.values()]),
        "specificity_macro": _mean_defined([v["specificity"] for v in per_class.values()]),
        "qwk": qwk,
        "per_class": per_class,
        "confusion_matrix": cm.astype(int).tolist(),
        "cutoff_aucs": {f">={c}": _binary_auc(y >= c, _cutoff_score(p, c)) for c in range(1, k)},
    }
    if k == 5:
        for key, c in _NAMED_CUTOFFS.items():
            report[key] = report["cutoff_aucs"][f">={c}"]
    report["ci"] = None
    if n_bootstrap > 0:
        unit = "sample" if groups is None else "patient"
        report["ci"] = _bootstrap_ci(
            p, y, pred, group_index, n_groups, auc_classes, n_bootstrap, float(ci), seed, unit,
            min_valid_resamples,
        )
    return report


def _bootstrap_ci(
    p: np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    group_index: np.ndarray,
    n_groups: int,
    auc_classes: list[int],
    n_bootstrap: int,
    level: float,
    seed: int | None,
    unit: str,
    min_valid: int | None,
) -> dict[str, Any]:
    """Percentile intervals of accuracy and macro AUROC over (cluster) bootstrap resamples."""
    rng = np.random.default_rng(seed)
    correct = (pred == y).astype(np.float64)
    acc_parts, auc_parts = [], []
    for w in bootstrap_weights(group_index, n_groups, n_bootstrap, rng):
        acc_parts.append(w @ correct / w.sum(axis=1))
        if auc_classes:
            aucs = np.stack([weighted_auroc(p[:, c], y == c, w) for c in auc_classes])
            auc_parts.append(aucs.mean(axis=0))  # NaN if any class is undefined: skipped
        else:
            auc_parts.append(np.full(w.shape[0], np.nan))
    return {
        "level": level,
        "method": "percentile",
        "unit": unit,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "accuracy": percentile_interval(np.concatenate(acc_parts), level, min_valid),
        "auc_macro": percentile_interval(np.concatenate(auc_parts), level, min_valid),
    }
