"""Classification report of any label set, as one JSON-ready dict.

The paper's metrics (section IV.C): accuracy, one-vs-rest macro AUROC, macro sensitivity
(eq. (4), TP / (TP + FN)), macro specificity (eq. (5), TN / (TN + FP)) and the confusion matrix,
with bootstrap confidence intervals that resample patients, not images (docs/paper_map.rst,
"Decisions" -> Metrics). For ordered (ordinal) classes also the quadratic-weighted Cohen's kappa
and the AUROC of every binary cut-off "class >= c"; a :class:`~mmfusion.labels.LabelSpec` names
the cut-offs a reader looks for (the liver's METAVIR spec: F>=2 significant fibrosis, F>=3
advanced, F4 cirrhosis, reported as ``auc_f2plus``, ``auc_f3plus``, ``auc_f4``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, roc_auc_score

from mmfusion.metrics._inputs import as_groups, as_labels, as_probs, default_class_names
from mmfusion.metrics.bootstrap import bootstrap_weights, percentile_interval, weighted_auroc

__all__ = ["classification_report"]

_CUTOFF_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


@runtime_checkable
class LabelSpecLike(Protocol):
    """What the metrics read of a :class:`~mmfusion.labels.LabelSpec` (this package imports no
    other part of mmfusion): the class names, whether they are ordered, the named cut-offs."""

    @property
    def names(self) -> tuple[str, ...]: ...

    @property
    def ordinal(self) -> bool: ...

    @property
    def cutoffs(self) -> Mapping[str, int]: ...


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
    """Score of "class >= c": summed probabilities of classes ``>= c``.

    Rounded to 12 decimals so that equal sums stay ties whatever the order of float additions.
    """
    return np.round(p[:, c:].sum(axis=1), 12)


def _check_cutoffs(cutoffs: object, k: int) -> dict[str, int]:
    """``cutoffs`` as ``{key: c}`` with ``1 <= c <= K-1`` and keys of letters, digits, ``_``."""
    if not isinstance(cutoffs, Mapping):
        raise ValueError(f"cutoffs: expected a mapping of key -> class index, got {cutoffs!r}")
    out: dict[str, int] = {}
    for key, c in cutoffs.items():
        if not (isinstance(key, str) and key and set(key) <= _CUTOFF_KEY_CHARS):
            raise ValueError(
                f"cutoffs: expected keys of letters, digits and underscores (report keys "
                f"auc_<key>), got {key!r}"
            )
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 1 <= c <= k - 1:
            raise ValueError(f"cutoffs: expected {key!r} -> an int in [1, {k - 1}], got {c!r}")
        out[key] = int(c)
    return out


def _label_options(
    labels: LabelSpecLike | None,
    class_names: Sequence[str] | None,
    cutoffs: Mapping[str, int] | None,
    k: int,
) -> tuple[list[str], bool, dict[str, int]]:
    """Class names, whether the classes are ordered, and the named cut-offs of a report."""
    if labels is not None:
        if not isinstance(labels, LabelSpecLike):
            raise ValueError(
                f"label_spec: expected a LabelSpec (mmfusion.labels) or None, got "
                f"{type(labels).__name__}"
            )
        if class_names is not None:
            raise ValueError(
                "class_names: not with label_spec= (the label spec names the classes); pass one "
                "of them"
            )
        if len(labels.names) != k:
            raise ValueError(
                f"label_spec: the label spec has {len(labels.names)} classes "
                f"{list(labels.names)}, probs has {k} columns"
            )
    names = list(labels.names) if labels is not None else default_class_names(class_names, k)
    ordinal = labels.ordinal if labels is not None else True
    named = _check_cutoffs(labels.cutoffs, k) if labels is not None else {}
    if cutoffs is not None:
        if not ordinal:
            raise ValueError(
                "cutoffs: cut-off AUROCs need ordered classes, but the label spec is nominal "
                "(ordinal=False)"
            )
        named = _check_cutoffs(cutoffs, k)
    return names, ordinal, named


def classification_report(
    probs: Any,
    labels: Any,
    *,
    groups: Any = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    label_spec: LabelSpecLike | None = None,
    cutoffs: Mapping[str, int] | None = None,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int | None = 0,
    min_valid_resamples: int | None = None,
) -> dict[str, Any]:
    """Compute the paper's metrics plus cut-off AUROCs, kappa and bootstrap intervals.

    The predicted class is the arg-max of ``probs`` (ties go to the lower class index).

    What the classes are comes from ``label_spec``: their names, whether they are ordered, and the
    cut-offs to report by name. With the liver's METAVIR spec (five ordered stages, cut-offs
    ``f2plus``, ``f3plus``, ``f4``) the report has ``auc_f2plus``, ``auc_f3plus`` and ``auc_f4``;
    with a nominal spec (``ordinal=False``, e.g. ``normal``/``benign``/``malignant``) it has
    neither ``qwk`` nor cut-off AUROCs, which would claim an order the classes do not have.
    Without a spec the classes are taken as ordered (as in earlier versions): ``qwk`` and every
    ``">=c"`` cut-off, named ``"0" .. "K-1"`` (or ``class_names``).

    Args:
        probs: ``[N, K]`` class probabilities (rows sum to 1), numpy array or torch tensor.
        labels: ``[N]`` integer true classes in ``0..K-1``.
        groups: Optional ``[N]`` patient ids (strings or integers). The bootstrap then resamples
            patients with replacement, each bringing all of its pairs; without groups it
            resamples samples.
        num_classes: ``K``; ``None`` takes it from ``probs`` (which must match when given).
        class_names: ``K`` unique names; default ``["0", ..., "K-1"]``. Not with ``label_spec``.
        label_spec: The :class:`~mmfusion.labels.LabelSpec` of the classes (``K`` names):
            class names, ``ordinal`` (``qwk`` and cut-offs only for ordered classes) and the
            named ``cutoffs``.
        cutoffs: Named cut-offs to report, ``{key: c}`` -> ``auc_<key>`` = the AUROC of
            "class >= c"; replaces the spec's. Only for ordered classes.
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
          (means over classes of eq. (4) and eq. (5)); ``qwk`` (quadratic-weighted Cohen's
          kappa; ordered classes only, the key is absent for a nominal spec).
        - ``per_class``: ``{name: {"support", "sensitivity", "specificity", "auc"}}``.
        - ``confusion_matrix``: ``K x K`` nested list of counts, rows = true class,
          columns = predicted class.
        - ``cutoff_aucs`` (ordered classes only; absent for a nominal spec): ``{">=c": AUROC}``
          for ``c`` in ``1..K-1``: the binary problem "class >= c" scored by the summed
          probabilities of classes ``>= c`` (rounded to 12 decimals, so that float summation
          order does not break ties). Then ``auc_<key>`` (= ``">=c"``) for every named cut-off
          ``{key: c}`` of ``label_spec`` or ``cutoffs``.
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
            1e-3, labels out of range, bad ``class_names``/``label_spec``/``cutoffs``/
            ``n_bootstrap``/``ci``/``min_valid_resamples``, a spec whose class count is not
            ``K``, ``cutoffs`` with a nominal spec); the message names the argument, what was
            expected and what came.

    Example:
        >>> from mmfusion.labels import LabelSpec
        >>> spec = LabelSpec(("normal", "benign", "malignant"))  # nominal
        >>> probs = [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]]
        >>> r = classification_report(probs, [0, 1, 2, 1], label_spec=spec, n_bootstrap=0)
        >>> r["accuracy"], r["class_names"], "qwk" in r, "cutoff_aucs" in r
        (0.75, ['normal', 'benign', 'malignant'], False, False)
    """
    p = as_probs(probs, num_classes)
    n, k = p.shape
    y = as_labels(labels, n, k)
    names, ordinal, named = _label_options(label_spec, class_names, cutoffs, k)
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
    }
    if ordinal:
        qwk: float | None = None
        if np.unique(np.concatenate([y, pred])).size > 1:
            qwk = float(cohen_kappa_score(y, pred, labels=list(range(k)), weights="quadratic"))
        report["qwk"] = qwk
    report["per_class"] = per_class
    report["confusion_matrix"] = cm.astype(int).tolist()
    if ordinal:
        cut = {f">={c}": _binary_auc(y >= c, _cutoff_score(p, c)) for c in range(1, k)}
        report["cutoff_aucs"] = cut
        for key, c in named.items():
            report[f"auc_{key}"] = cut[f">={c}"]
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
