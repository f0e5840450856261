"""One-vs-rest ROC curves per class and their macro average, for plots like the paper's Fig. 7.

Section IV.C of the paper: each class's ROC treats the other classes as one negative class, and the
overall AUC is the mean of the per-class AUCs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from mmfusion.metrics._inputs import as_labels, as_probs, default_class_names

__all__ = ["roc_curves"]


def roc_curves(
    probs: Any, labels: Any, *, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Per-class one-vs-rest ROC curves and the macro-average curve.

    Args:
        probs: ``[N, K]`` class probabilities (rows sum to 1), numpy array or torch tensor.
        labels: ``[N]`` integer true classes in ``0..K-1``.
        class_names: ``K`` unique names; default ``["0", ..., "K-1"]``.

    Returns:
        ``{"per_class": {name: {"fpr", "tpr", "auc"}}, "macro": {"fpr", "tpr", "auc"}}`` with
        ``fpr``/``tpr`` 1-D float arrays of equal length, starting at (0, 0) and ending at (1, 1).
        A class absent from ``labels`` (or that is every label) has an undefined curve:
        ``fpr``, ``tpr`` and ``auc`` are ``None``. The macro curve is the mean of the defined
        classes' TPRs interpolated on the union of their FPRs; its ``auc`` is the mean of their
        AUCs (the report's ``auc_macro``), which can differ slightly from the area under the
        averaged curve. All ``None`` if no class is defined.

    Raises:
        ValueError: Malformed input (as :func:`mmfusion.metrics.classification_report`).
    """
    p = as_probs(probs)
    n, k = p.shape
    y = as_labels(labels, n, k)
    names = default_class_names(class_names, k)
    per_class: dict[str, dict[str, Any]] = {}
    curves = []
    for c, name in enumerate(names):
        positive = y == c
        if positive.all() or not positive.any():
            per_class[name] = {"fpr": None, "tpr": None, "auc": None}
            continue
        fpr, tpr, _ = roc_curve(positive, p[:, c])
        auc = float(roc_auc_score(positive, p[:, c]))
        per_class[name] = {"fpr": fpr, "tpr": tpr, "auc": auc}
        curves.append((fpr, tpr, auc))
    macro: dict[str, Any] = {"fpr": None, "tpr": None, "auc": None}
    if curves:
        grid = np.unique(np.concatenate([fpr for fpr, _, _ in curves]))
        mean_tpr = np.mean([np.interp(grid, fpr, tpr) for fpr, tpr, _ in curves], axis=0)
        mean_tpr[-1] = 1.0
        macro = {"fpr": grid, "tpr": mean_tpr, "auc": float(np.mean([a for _, _, a in curves]))}
    return {"per_class": per_class, "macro": macro}
