"""Vectorised (cluster) bootstrap for accuracy and one-vs-rest AUROC.

A bootstrap resample that draws ``G`` units (patients, or samples when no groups are given) with
replacement is equivalent to the original data set with integer *weights*: each sample's weight is
the number of times its unit was drawn. All resamples are therefore a ``[B, N]`` weight matrix, and
accuracy and AUROC of every resample follow from a few matrix operations on the data sorted once,
instead of ``B`` calls to a metric function. The weighted AUROC is the Mann-Whitney statistic with
ties counted one half, which equals the ROC area (``sklearn.metrics.roc_auc_score`` with
``sample_weight``); the tests check it against scikit-learn on explicitly resampled data.

Resampling whole patients keeps each patient's correlated image pairs together
(docs/paper_map.rst, "Decisions"), so the intervals are not too narrow.

A resample where the metric is undefined (e.g. macro AUROC in a resample that lacks a class) is
skipped. When most resamples are skipped, the remaining ones are a biased selection (those that
happened to draw the rare class) and their percentiles can exclude the estimate itself; an interval
is therefore reported only from at least :func:`min_valid_resamples` defined resamples (20, or half
of the resamples if that is more), and always together with the count.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["bootstrap_weights", "min_valid_resamples", "percentile_interval", "weighted_auroc"]

#: Fewest defined resamples an interval is ever reported from (see :func:`min_valid_resamples`).
MIN_VALID_FLOOR = 20

#: Upper bound on ``chunk * N`` elements of one weight matrix (bounds memory, about 32 MB).
_MAX_CHUNK_ELEMENTS = 4_000_000


def bootstrap_weights(
    group_index: np.ndarray, n_groups: int, n_bootstrap: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Yield sample weights of bootstrap resamples over groups, in chunks.

    Args:
        group_index: ``[N]`` group of each sample in ``0..G-1``.
        n_groups: ``G``.
        n_bootstrap: Total number of resamples ``B``.
        rng: Random generator; the same seed gives the same resamples.

    Yields:
        ``[b, N]`` float64 weights (how often each sample occurs in the resample); the chunk sizes
        ``b`` add up to ``B``.
    """
    n = group_index.shape[0]
    chunk = max(1, min(n_bootstrap, _MAX_CHUNK_ELEMENTS // max(n, n_groups)))
    uniform = np.full(n_groups, 1.0 / n_groups)
    done = 0
    while done < n_bootstrap:
        b = min(chunk, n_bootstrap - done)
        counts = rng.multinomial(n_groups, uniform, size=b)  # [b, G] draws per group
        yield counts[:, group_index].astype(np.float64)
        done += b


def weighted_auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Binary AUROC of one score under many weightings of the samples.

    Args:
        scores: ``[N]`` score, larger means more likely positive.
        positive: ``[N]`` bool, true for the positive class.
        weights: ``[B, N]`` non-negative sample weights (one row per resample).

    Returns:
        ``[B]`` AUROC per row; NaN where the row has no positive or no negative weight.
    """
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    pos = positive[order]
    w = weights[:, order]
    # Start of each run of tied scores: ties form one block of the ROC staircase.
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    w_pos = np.add.reduceat(w * pos, starts, axis=1)  # [B, U] positive weight per distinct score
    w_neg = np.add.reduceat(w * ~pos, starts, axis=1)
    neg_below = np.cumsum(w_neg, axis=1) - w_neg  # negative weight with strictly lower score
    pairs = (w_pos * (neg_below + 0.5 * w_neg)).sum(axis=1)
    total = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, pairs / np.where(total > 0, total, 1.0), np.nan)


def min_valid_resamples(n_bootstrap: int) -> int:
    """Fewest defined resamples a percentile interval is reported from.

    Args:
        n_bootstrap: Number of resamples drawn ``B``.

    Returns:
        ``max(20, ceil(B / 2))``: at least 20 replicates, and at least half of those drawn (so a
        rare class missing from most resamples does not select a biased minority).
    """
    return max(MIN_VALID_FLOOR, -(-int(n_bootstrap) // 2))


def percentile_interval(
    values: np.ndarray, level: float, min_valid: int | None = None
) -> dict[str, Any]:
    """Percentile bootstrap interval over the defined (non-NaN) replicates.

    Args:
        values: ``[B]`` replicate values; NaN marks a resample where the metric is undefined.
        level: Coverage, e.g. ``0.95``.
        min_valid: Fewest defined replicates to report an interval from (>= 2); ``None`` uses
            :func:`min_valid_resamples` of ``B``.

    Returns:
        ``{"lower", "upper", "n_valid", "n_resamples", "min_valid", "reason"}``: ``n_valid`` of
        the ``n_resamples`` replicates are defined. With fewer than ``min_valid`` the bounds are
        ``None`` and ``reason`` says why; otherwise ``reason`` is ``None``.

    Raises:
        ValueError: ``min_valid`` is not an int >= 2.
    """
    n_resamples = int(values.shape[0])
    if min_valid is None:
        min_valid = min_valid_resamples(n_resamples)
    elif isinstance(min_valid, bool) or not isinstance(min_valid, (int, np.integer)) or min_valid < 2:
        raise ValueError(f"min_valid: expected an int >= 2, got {min_valid!r}")
    valid = values[~np.isnan(values)]
    result: dict[str, Any] = {
        "lower": None,
        "upper": None,
        "n_valid": int(valid.size),
        "n_resamples": n_resamples,
        "min_valid": int(min_valid),
        "reason": None,
    }
    if valid.size < min_valid:
        result["reason"] = (
            f"only {valid.size} of {n_resamples} bootstrap resamples define the metric; "
            f"an interval needs at least {min_valid}"
        )
        return result
    alpha = 1.0 - level
    lower, upper = np.quantile(valid, [alpha / 2, 1 - alpha / 2])
    result["lower"], result["upper"] = float(lower), float(upper)
    return result
