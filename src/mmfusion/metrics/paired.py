"""Is model A better than model B on the same test set? Paired intervals for the difference.

Two models evaluated on the same patients are not independent samples: a hard patient is hard for
both. Comparing two separate intervals ignores that correlation and is far too conservative; the
difference has to be resampled as a pair.

- :func:`paired_bootstrap`: the patient (cluster) bootstrap of the difference in accuracy and in
  macro one-vs-rest AUROC, ``metric(A) - metric(B)``: every resample draws patients with
  replacement, and the SAME resample scores both models (the ``[B, N]`` weight matrix of
  ``mmfusion.metrics.bootstrap.bootstrap_weights``, each sample weighted by how often its
  patient was drawn; Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13 for the
  percentile interval; Field & Welsh, "Bootstrapping clustered data", JRSS B 2007;69(3):369-390,
  for resampling whole clusters). Resampling patients keeps a patient's correlated views together.
- :func:`t_interval`, :func:`paired_t_interval`: Student's t-interval of a mean over a few runs
  (e.g. training seeds), and of the mean of paired differences ``a_i - b_i`` (run ``i`` of A and of
  B share seed ``i``): ``mean +/- t_{1 - alpha/2, n-1} * sd / sqrt(n)`` (Student 1908; the
  interval of ``scipy.stats.ttest_rel``).

The bootstrap answers "how much would the difference move with another test cohort of this
size?" (variation of the test set); the t-interval over seeds answers "how much does it move with
another training run?" (variation of training). Report both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from mmfusion.metrics._inputs import as_groups, as_labels, as_probs
from mmfusion.metrics.bootstrap import bootstrap_weights, percentile_interval, weighted_auroc

__all__ = ["paired_bootstrap", "paired_t_interval", "t_interval"]


def _macro_auc(p: np.ndarray, y: np.ndarray, classes: Sequence[int]) -> float | None:
    """Mean one-vs-rest AUROC over ``classes`` (scikit-learn); ``None`` without classes."""
    if not classes:
        return None
    return float(np.mean([roc_auc_score(y == c, p[:, c]) for c in classes]))


def _check_level(ci: object) -> float:
    if isinstance(ci, bool) or not isinstance(ci, (int, float)) or not 0.0 < float(ci) < 1.0:
        raise ValueError(f"ci: expected a coverage in (0, 1), e.g. 0.95, got {ci!r}")
    return float(ci)


def paired_bootstrap(
    probs_a: Any,
    probs_b: Any,
    labels: Any,
    groups: Any,
    *,
    n_bootstrap: int = 2000,
    ci: float = 0.95,
    seed: int | None = 0,
    min_valid_resamples: int | None = None,
) -> dict[str, Any]:
    """Paired patient bootstrap of ``metric(A) - metric(B)`` for accuracy and macro AUROC.

    Both models must have scored the same samples, row for row (the same views of the same
    patients in the same order). The predicted class is the arg-max (ties to the lower index), as
    in :func:`~mmfusion.metrics.classification_report`.

    Args:
        probs_a: ``[N, K]`` class probabilities of model A (rows sum to 1), numpy or torch.
        probs_b: ``[N, K]`` class probabilities of model B for the same rows.
        labels: ``[N]`` integer true classes in ``0..K-1``.
        groups: ``[N]`` patient id of each row (strings or integers); a patient is resampled
            whole. Pass ``np.arange(N)`` to resample rows.
        n_bootstrap: Number of resamples ``B`` (>= 1).
        ci: Coverage of the percentile intervals, in ``(0, 1)``.
        seed: Seed of the resampling (``None``: fresh entropy, not reproducible).
        min_valid_resamples: Fewest resamples where a difference is defined for its interval to
            be reported (>= 2); ``None``: ``mmfusion.metrics.bootstrap.min_valid_resamples``.

    Returns:
        A JSON-ready dict: ``n`` (rows), ``n_groups`` (patients), ``num_classes``, ``ci``
        (``{"level", "method": "percentile", "unit": "patient", "n_bootstrap", "seed"}``) and,
        for ``"accuracy"`` and ``"auc_macro"``, ``{"a", "b", "difference", "lower", "upper",
        "n_valid", "n_resamples", "min_valid", "reason", "share_at_or_below_zero"}``:
        the two models' values on the whole test set, their difference ``a - b``, the interval
        of the difference, and the share of defined resamples whose difference is ``<= 0`` (a
        one-sided bootstrap p-value for "A is better"). The macro AUROC averages the classes with
        positives and negatives in the whole set; a resample lacking one of them is skipped
        (``n_valid`` counts the rest); ``None`` values where undefined.

    Raises:
        ValueError: Malformed input (the message names the argument): shapes that differ between
            the two models, rows not summing to 1, labels out of range, a bad ``groups``,
            ``n_bootstrap`` < 1 or ``ci`` outside ``(0, 1)``.

    Example:
        >>> import numpy as np
        >>> y = np.array([0, 1, 0, 1])
        >>> a = np.eye(2)[y]          # always right
        >>> b = np.eye(2)[1 - y]      # always wrong
        >>> r = paired_bootstrap(a, b, y, ["p1", "p1", "p2", "p3"], n_bootstrap=200)
        >>> r["accuracy"]["difference"], r["accuracy"]["lower"], r["accuracy"]["upper"]
        (1.0, 1.0, 1.0)
    """
    pa = as_probs(probs_a)
    n, k = pa.shape
    pb = as_probs(probs_b, k)
    if pb.shape != pa.shape:
        raise ValueError(f"probs_b: expected the shape of probs_a {pa.shape}, got {pb.shape}")
    y = as_labels(labels, n, k)
    group_index, n_groups = as_groups(groups, n)
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap: expected an int >= 1, got {n_bootstrap!r}")
    level = _check_level(ci)

    correct_a = (pa.argmax(axis=1) == y).astype(np.float64)
    correct_b = (pb.argmax(axis=1) == y).astype(np.float64)
    classes = [c for c in range(k) if 0 < int((y == c).sum()) < n]
    rng = np.random.default_rng(seed)
    acc_diff, auc_diff = [], []
    for w in bootstrap_weights(group_index, n_groups, int(n_bootstrap), rng):
        total = w.sum(axis=1)
        acc_diff.append((w @ correct_a - w @ correct_b) / total)
        if classes:
            auc_a = np.stack([weighted_auroc(pa[:, c], y == c, w) for c in classes]).mean(axis=0)
            auc_b = np.stack([weighted_auroc(pb[:, c], y == c, w) for c in classes]).mean(axis=0)
            auc_diff.append(auc_a - auc_b)  # NaN where a class is undefined in the resample
        else:
            auc_diff.append(np.full(w.shape[0], np.nan))

    def summary(a: float | None, b: float | None, replicates: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {"a": a, "b": b, "difference": None if a is None or b is None else a - b}
        out.update(percentile_interval(replicates, level, min_valid_resamples))
        valid = replicates[~np.isnan(replicates)]
        out["share_at_or_below_zero"] = float((valid <= 0).mean()) if valid.size else None
        return out

    return {
        "n": n,
        "n_groups": n_groups,
        "num_classes": k,
        "ci": {"level": level, "method": "percentile", "unit": "patient",
               "n_bootstrap": int(n_bootstrap), "seed": seed},
        "accuracy": summary(float(correct_a.mean()), float(correct_b.mean()),
                            np.concatenate(acc_diff)),
        "auc_macro": summary(_macro_auc(pa, y, classes), _macro_auc(pb, y, classes),
                             np.concatenate(auc_diff)),
    }


def t_interval(values: Sequence[float] | np.ndarray, ci: float = 0.95) -> dict[str, Any]:
    """Student's t-interval of the mean of a few values (e.g. one metric over training seeds).

    Args:
        values: ``[n]`` finite values.
        ci: Coverage in ``(0, 1)``.

    Returns:
        ``{"mean", "sd" (ddof=1), "n", "level", "lower", "upper"}``: ``mean +/- t_{1-alpha/2,
        n-1} sd / sqrt(n)``; with ``n == 1`` the sd and bounds are ``None``.

    Raises:
        ValueError: ``values`` empty, not 1-D or not finite; ``ci`` outside ``(0, 1)``.

    Example:
        >>> r = t_interval([0.70, 0.72, 0.74])
        >>> round(r["mean"], 3), round(r["lower"], 3), round(r["upper"], 3)
        (0.72, 0.67, 0.77)
    """
    from scipy import stats  # loaded on first use

    level = _check_level(ci)
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"values: expected a non-empty 1-D sequence of finite numbers, got {values!r}")
    n = int(x.size)
    out: dict[str, Any] = {"mean": float(x.mean()), "sd": None, "n": n, "level": level,
                           "lower": None, "upper": None}
    if n >= 2:
        sd = float(x.std(ddof=1))
        half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n))
        out.update(sd=sd, lower=out["mean"] - half, upper=out["mean"] + half)
    return out


def paired_t_interval(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, ci: float = 0.95
) -> dict[str, Any]:
    """Student's t-interval of the mean paired difference ``a_i - b_i`` (pairs share a seed).

    Args:
        a: ``[n]`` values of A (e.g. accuracy of method A with seeds ``0..n-1``).
        b: ``[n]`` values of B with the same seeds, in the same order.
        ci: Coverage in ``(0, 1)``.

    Returns:
        :func:`t_interval` of the differences (``mean`` is the mean difference).

    Raises:
        ValueError: ``a`` and ``b`` of different lengths, or as :func:`t_interval`.
    """
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if xa.shape != xb.shape:
        raise ValueError(f"b: expected the shape of a {xa.shape}, got {xb.shape}")
    return t_interval(xa - xb, ci)
