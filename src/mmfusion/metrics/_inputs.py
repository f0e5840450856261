"""Validation and conversion of the inputs shared by the metric functions.

Every check raises :class:`ValueError` whose message names the argument, what was expected and
what came, so that a wrong call is fixed from the message alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["ROW_SUM_TOL", "as_groups", "as_labels", "as_probs", "default_class_names"]

#: Largest allowed deviation of a row sum of ``probs`` from 1 (float32 softmax is far closer).
ROW_SUM_TOL = 1e-3


def _to_numpy(x: Any) -> np.ndarray:
    """Return ``x`` (numpy array, torch tensor or sequence) as a numpy array on the CPU."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.double()  # bfloat16/float16 have no (exact) numpy equivalent
        return x.numpy()
    return np.asarray(x)


def as_probs(probs: Any, num_classes: int | None = None) -> np.ndarray:
    """Validate class probabilities.

    Args:
        probs: ``[N, K]`` probabilities (e.g. softmax outputs), numpy array or torch tensor.
        num_classes: Expected ``K``; ``None`` takes it from ``probs``.

    Returns:
        ``[N, K]`` float64 array.

    Raises:
        ValueError: Wrong rank, ``K < 2``, ``N == 0``, ``K != num_classes``, non-finite or
            out-of-range values, or a row that does not sum to 1 within :data:`ROW_SUM_TOL`.
    """
    p = _to_numpy(probs)
    if p.ndim != 2:
        raise ValueError(f"probs: expected a 2-D array [N, K], got shape {tuple(p.shape)}")
    if not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)):
        raise ValueError(f"probs: expected a numeric array, got dtype {p.dtype}")
    n, k = p.shape
    if n == 0:
        raise ValueError("probs: expected at least one row (sample), got shape (0, K)")
    if k < 2:
        raise ValueError(f"probs: expected at least 2 columns (classes), got shape {(n, k)}")
    if num_classes is not None and k != num_classes:
        raise ValueError(
            f"probs: expected {num_classes} columns (num_classes={num_classes}), got shape {(n, k)}"
        )
    p = p.astype(np.float64)
    if not np.all(np.isfinite(p)):
        raise ValueError(
            f"probs: expected finite values, got {int((~np.isfinite(p)).sum())} NaN/inf"
        )
    if p.min() < -ROW_SUM_TOL or p.max() > 1 + ROW_SUM_TOL:
        raise ValueError(
            f"probs: expected probabilities in [0, 1], got values in [{p.min():.4g}, {p.max():.4g}]"
            " (pass softmax(logits), not logits)"
        )
    sums = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_TOL)
    if bad.size:
        raise ValueError(
            f"probs: expected every row to sum to 1 (tolerance {ROW_SUM_TOL:g}), got {bad.size} "
            f"row(s) that do not, e.g. row {bad[0]} sums to {sums[bad[0]]:.6g}"
            " (pass softmax(logits), not logits)"
        )
    return p


def as_labels(labels: Any, n: int, num_classes: int) -> np.ndarray:
    """Validate integer class labels.

    Args:
        labels: ``[N]`` integer labels in ``0..K-1``; integral floats are accepted.
        n: Expected length ``N`` (rows of ``probs``).
        num_classes: ``K``.

    Returns:
        ``[N]`` int64 array.

    Raises:
        ValueError: Wrong rank or length, non-integer values, or values outside ``0..K-1``.
    """
    y = _to_numpy(labels)
    if y.ndim != 1:
        raise ValueError(f"labels: expected a 1-D array [N], got shape {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(f"labels: expected length {n} (rows of probs), got length {y.shape[0]}")
    if y.dtype == np.bool_ or not (
        np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)
    ):
        raise ValueError(f"labels: expected integer class indices, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError("labels: expected integer class indices, got non-integer values")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(
            f"labels: expected values in 0..{num_classes - 1} (K={num_classes}), "
            f"got values in {y.min()}..{y.max()}"
        )
    return y


def as_groups(groups: Any, n: int) -> tuple[np.ndarray, int]:
    """Encode group ids (e.g. patient ids) as consecutive integers.

    Args:
        groups: ``[N]`` hashable ids (strings or integers), one per sample.
        n: Expected length ``N``.

    Returns:
        ``(inverse, n_groups)``: ``[N]`` int64 index of each sample's group in ``0..G-1`` and ``G``.

    Raises:
        ValueError: Wrong rank or length.
    """
    g = _to_numpy(groups)
    if g.ndim != 1:
        raise ValueError(f"groups: expected a 1-D sequence of ids [N], got shape {tuple(g.shape)}")
    if g.shape[0] != n:
        raise ValueError(f"groups: expected length {n} (rows of probs), got length {g.shape[0]}")
    if g.dtype == object:
        g = g.astype(str)
    _, inverse = np.unique(g, return_inverse=True)
    inverse = inverse.reshape(-1).astype(np.int64)
    return inverse, int(inverse.max()) + 1


def default_class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """Return ``class_names`` validated, or ``["0", ..., "K-1"]``.

    Raises:
        ValueError: Wrong number of names or duplicates.
    """
    if class_names is None:
        return [str(k) for k in range(num_classes)]
    names = [str(c) for c in class_names]
    if len(names) != num_classes:
        raise ValueError(
            f"class_names: expected {num_classes} names (one per class), got {len(names)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"class_names: expected unique names, got {names}")
    return names
