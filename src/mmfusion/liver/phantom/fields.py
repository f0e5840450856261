"""Smooth Gaussian random fields, the building block of phantom texture and stiffness maps."""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["smooth_field", "smooth_profile"]


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """A smooth random field with about unit standard deviation.

    White noise on a grid ``scale_px / 2`` times coarser is blurred and resized (bicubic) to
    ``shape``, which gives a correlation length of about ``scale_px`` pixels.

    Args:
        rng: Random generator.
        shape: ``(H, W)`` of the field.
        scale_px: Correlation length in pixels (> 0).

    Returns:
        ``[H, W]`` float32 field.
    """
    h, w = shape
    factor = max(scale_px / 2.0, 1.0)
    lh, lw = math.ceil(h / factor) + 3, math.ceil(w / factor) + 3
    noise = rng.standard_normal((lh, lw), dtype=np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), 1.0)
    noise /= max(float(noise.std()), 1e-6)
    return cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)


def smooth_profile(rng: np.random.Generator, n_points: int, n_ctrl: int) -> np.ndarray:
    """A smooth random 1-D profile of ``n_points`` values from ``n_ctrl`` control points.

    Returns:
        ``[n_points]`` float32 with about unit standard deviation.
    """
    ctrl = rng.standard_normal((1, max(n_ctrl, 2)), dtype=np.float32)
    profile = cv2.resize(ctrl, (n_points, 1), interpolation=cv2.INTER_CUBIC)[0]
    return profile / max(float(np.abs(ctrl).mean() * 1.25), 1e-6)
