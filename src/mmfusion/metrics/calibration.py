"""Calibration: does a predicted probability of 0.8 come true 80% of the time?

A clinician reads a model's probability as a risk. Accuracy and AUROC do not say whether that risk
is right; the expected calibration error (ECE) and the reliability diagram do, and temperature
scaling (Guo et al., "On calibration of modern neural networks", ICML 2017) repairs the common
case of an over-confident network with one scalar fitted on held-out data.

- :func:`reliability_diagram`: per-bin mean confidence, accuracy and count, and the ECE.
- :func:`expected_calibration_error`: the top-label ECE alone.
- :func:`fit_temperature` / :func:`apply_temperature`: temperature scaling of logits.

Confidence is the top-label probability (the largest of a row); bins are equal-width,
``(b / n_bins, (b + 1) / n_bins]`` for ``b = 0 .. n_bins - 1``;
``ECE = sum_b |B_b| / N * |accuracy(B_b) - mean confidence(B_b)|``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mmfusion.metrics._inputs import _to_numpy, as_labels, as_probs

__all__ = [
    "apply_temperature",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_diagram",
]

#: Range of temperatures :func:`fit_temperature` searches.
TEMPERATURE_RANGE = (0.01, 100.0)


def _check_bins(n_bins: Any) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins: expected a positive int, got {n_bins!r}")
    return int(n_bins)


def reliability_diagram(probs: Any, labels: Any, n_bins: int = 15) -> dict[str, Any]:
    """The data of a reliability diagram: per-bin confidence, accuracy and count, and the ECE.

    Args:
        probs: ``[N, K]`` class probabilities (rows sum to 1), numpy array or torch tensor.
        labels: ``[N]`` integer true classes in ``0..K-1``.
        n_bins: Number of equal-width confidence bins over ``(0, 1]``.

    Returns:
        ``{"bin_edges": [n_bins + 1], "confidence": [n_bins], "accuracy": [n_bins],
        "count": [n_bins], "ece": float, "n": N}``: float64 arrays (``count`` int64), with the
        mean top-label confidence and the accuracy of each bin, NaN in empty bins.

    Raises:
        ValueError: Malformed ``probs``/``labels`` (as
            :func:`mmfusion.metrics.classification_report`) or ``n_bins`` not a positive int.
    """
    p = as_probs(probs)
    n, k = p.shape
    y = as_labels(labels, n, k)
    bins = _check_bins(n_bins)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # Bin b holds confidences in (b / bins, (b + 1) / bins]; a confidence is at least 1 / K > 0.
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=bins) / count
    filled = count > 0
    ece = float(np.sum(count[filled] / n * np.abs(accuracy[filled] - mean_conf[filled])))
    return {
        "bin_edges": np.linspace(0.0, 1.0, bins + 1),
        "confidence": mean_conf,
        "accuracy": accuracy,
        "count": count.astype(np.int64),
        "ece": ece,
        "n": n,
    }


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Top-label expected calibration error with equal-width bins (see the module text).

    Args:
        probs: ``[N, K]`` class probabilities (rows sum to 1), numpy array or torch tensor.
        labels: ``[N]`` integer true classes in ``0..K-1``.
        n_bins: Number of equal-width confidence bins over ``(0, 1]`` (15, as Guo et al.).

    Returns:
        ECE in ``[0, 1]``; 0 means every bin's accuracy equals its mean confidence.

    Raises:
        ValueError: As :func:`reliability_diagram`.

    Example:
        >>> probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]])
        >>> round(expected_calibration_error(probs, [0, 0, 0, 1], n_bins=10), 4)
        0.4375
    """
    return reliability_diagram(probs, labels, n_bins)["ece"]


def _as_logits(logits: Any) -> torch.Tensor:
    z = _to_numpy(logits)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
        raise ValueError(f"logits: expected a 2-D array [N, K] with K >= 2, got shape {z.shape}")
    if not np.issubdtype(z.dtype, np.number) or np.issubdtype(z.dtype, np.complexfloating):
        raise ValueError(f"logits: expected real numbers, got dtype {z.dtype}")
    z = z.astype(np.float64)
    if not np.all(np.isfinite(z)):
        raise ValueError(
            f"logits: expected finite values, got {int((~np.isfinite(z)).sum())} NaN/inf"
        )
    return torch.from_numpy(z)


def fit_temperature(logits: Any, labels: Any, *, max_iter: int = 100) -> float:
    """Fit the temperature ``T`` that minimises the NLL of ``softmax(logits / T)``.

    One scalar, fitted on held-out (validation) logits, never on the training set: it rescales
    confidence without changing any prediction (the arg-max is the same for every ``T > 0``).
    L-BFGS (PyTorch, strong-Wolfe line search) on ``log T`` in float64, started at ``T = 1`` and
    kept within :data:`~mmfusion.metrics.calibration.TEMPERATURE_RANGE`.

    Args:
        logits: ``[N, K]`` logits (pre-softmax scores), numpy array or torch tensor.
        labels: ``[N]`` integer true classes in ``0..K-1``.
        max_iter: Maximum L-BFGS iterations.

    Returns:
        ``T > 0``: above 1 softens an over-confident model, below 1 sharpens an under-confident
        one.

    Raises:
        ValueError: Malformed ``logits`` or ``labels``.
    """
    z = _as_logits(logits)
    y = torch.from_numpy(as_labels(labels, z.shape[0], z.shape[1]))
    lo, hi = (float(np.log(t)) for t in TEMPERATURE_RANGE)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.clamp(lo, hi).exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    t_min, t_max = TEMPERATURE_RANGE
    return min(max(float(log_t.detach().clamp(lo, hi).exp()), t_min), t_max)


def apply_temperature(logits: Any, temperature: float) -> Any:
    """Calibrated probabilities ``softmax(logits / temperature)``.

    Args:
        logits: ``[N, K]`` logits, numpy array or torch tensor.
        temperature: ``T > 0`` (e.g. from :func:`fit_temperature`).

    Returns:
        ``[N, K]`` probabilities: a float64 numpy array for numpy input, a tensor of the input's
        dtype and device for tensor input.

    Raises:
        ValueError: Malformed ``logits``, or ``temperature`` not a finite number > 0.
    """
    t = float(temperature)
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"temperature: expected a finite number > 0, got {temperature!r}")
    if isinstance(logits, torch.Tensor):
        if logits.ndim != 2 or not logits.is_floating_point():
            raise ValueError(
                f"logits: expected a floating-point [N, K] tensor, got shape "
                f"{tuple(logits.shape)} dtype {logits.dtype}"
            )
        return torch.softmax(logits / t, dim=1)
    return torch.softmax(_as_logits(logits) / t, dim=1).numpy()
